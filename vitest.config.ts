import { cloudflareTest } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          environment: "node",
        },
      },
      {
        // The Worker in workerd (real Durable Objects, Cache API, scheduled events) against the
        // partner sandbox on loopback (a real OAuth 2.0 server, oidc-provider).
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                PARTNER_TOKEN_URL: inject("tokenUrl"),
                PARTNER_API_URL: inject("apiUrl"),
                PARTNER_CLIENT_ID: inject("clientPostId"),
                PARTNER_CLIENT_SECRET: inject("clientPostSecret"),
                PARTNER_CLIENT_AUTH: "client_secret_post",
                VEHICLES_TTL_S: "30",
                VEHICLES_STALE_S: "120",
                CORS_ORIGINS: "https://app.example.com",
                ALLOW_TIER_BYPASS: "true",
                // Test-only settings the integration tests read (never secrets of a real partner).
                SANDBOX_URL: inject("sandboxUrl"),
                SANDBOX_BASIC_ID: inject("clientBasicId"),
                SANDBOX_BASIC_SECRET: inject("clientBasicSecret"),
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/support/global-setup.ts"],
          // One file at a time: they share the one sandbox, whose request counts the tests assert.
          fileParallelism: false,
          testTimeout: 30_000,
        },
      },
      {
        // The same gateway as a long-lived process: real Deno and Bun binaries against the sandbox.
        test: {
          name: "runtimes",
          include: ["test/runtimes/**/*.test.ts"],
          environment: "node",
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
