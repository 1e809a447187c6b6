/**
 * The OpenAPI document as the Worker serves it: the text `npm run gen:openapi` wrote from
 * `buildOpenApiDocument` (openapi.ts, the valibot definitions turned into JSON Schema by
 * `@valibot/to-json-schema`), with the deployment's `VEHICLES_MAX_LIMIT` put in. The converter
 * and the builder are about 3 KB of the Worker's gzip budget and run once per isolate for the
 * same text every time, so they run at build time; a unit test keeps the text equal to what they
 * build (test/unit/vehicles/openapi.test.ts).
 */
import { OPENAPI_TEMPLATE } from "./openapi.generated.ts";

/** The `maxLimit` the template is built with: a number that appears nowhere else in it. */
export const MAX_LIMIT_PLACEHOLDER = 987654321;

/** The document's JSON text for a deployment whose largest page is `maxLimit`. */
export function openApiJson(maxLimit: number): string {
  return OPENAPI_TEMPLATE.replaceAll(String(MAX_LIMIT_PLACEHOLDER), String(maxLimit));
}
