// `pnpm --filter @meshtls/reliability-suite soak`: the soak alone (RELIABILITY_SOAK_MINUTES, default 10).
import { fileURLToPath } from "node:url";
import { defineProject, mergeConfig } from "vitest/config";
import base from "../vitest.config.ts";

export default mergeConfig(
  base,
  defineProject({
    root: fileURLToPath(new URL("..", import.meta.url)),
    test: {
      include: ["bench/soak.bench.ts"],
      maxWorkers: 1,
      testTimeout: 4 * 60 * 60_000,
      hookTimeout: 300_000,
    },
  }),
);
