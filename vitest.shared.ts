import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const packagesDir = fileURLToPath(new URL("./packages/", import.meta.url));

/**
 * Base test config for every workspace project. `@meshtls/<name>` resolves to
 * the package's TypeScript source, so unit tests never need a prior build;
 * process-level tests in apps/ run the built binaries instead.
 */
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@meshtls\/([a-z-]+)$/, replacement: `${packagesDir}$1/src/index.ts` },
      { find: /^@meshtls\/([a-z-]+)\/([a-z-]+)$/, replacement: `${packagesDir}$1/src/$2.ts` },
    ],
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
