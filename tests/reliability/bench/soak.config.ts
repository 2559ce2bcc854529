// `pnpm --filter @meshtls/reliability-suite soak`: the soak alone (RELIABILITY_SOAK_MINUTES, default 10).
import { fileURLToPath } from "node:url";
import { defineProject, mergeConfig } from "vitest/config";
import base from "../vitest.config.ts";

const config = mergeConfig(
  base,
  defineProject({
    root: fileURLToPath(new URL("..", import.meta.url)),
    test: {
      maxWorkers: 1,
      testTimeout: 4 * 60 * 60_000,
      hookTimeout: 300_000,
    },
  }),
);
// mergeConfig appends arrays: the files to run replace the fault suite's list instead.
config.test = { ...config.test, include: ["bench/soak.bench.ts"] };

export default config;
