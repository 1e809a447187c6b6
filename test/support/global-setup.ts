/// <reference types="node" />
/**
 * Starts the partner sandbox (a real oidc-provider token endpoint and the vehicles API) on
 * loopback for the integration tests; the Worker under test in workerd reaches it over HTTP.
 */
import type { TestProject } from "vitest/node";
import { type Sandbox, startSandbox } from "../../sandbox/index.ts";

declare module "vitest" {
  export interface ProvidedContext {
    sandboxUrl: string;
    tokenUrl: string;
    apiUrl: string;
    clientPostId: string;
    clientPostSecret: string;
    clientBasicId: string;
    clientBasicSecret: string;
  }
}

let sandbox: Sandbox | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  sandbox = await startSandbox({ port: 0, fleetSize: 2000, seed: 7 });
  project.provide("sandboxUrl", sandbox.url);
  project.provide("tokenUrl", sandbox.tokenUrl);
  project.provide("apiUrl", sandbox.apiUrl);
  project.provide("clientPostId", sandbox.clients.post.id);
  project.provide("clientPostSecret", sandbox.clients.post.secret);
  project.provide("clientBasicId", sandbox.clients.basic.id);
  project.provide("clientBasicSecret", sandbox.clients.basic.secret);
  return async () => {
    await sandbox?.close();
  };
}
