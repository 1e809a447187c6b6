/**
 * The gateway on Deno: the real binary runs src/runtimes/deno.ts against the partner sandbox.
 * The test body is shared with the other runtimes (gateway-suite.ts).
 */
import { describeGatewayOn } from "./gateway-suite.ts";

describeGatewayOn("deno");
