// `pnpm reliability`: the fault cases, then the load cases alone on the machine, in one table.
import { fileURLToPath } from "node:url";
import { defineProject, mergeConfig } from "vitest/config";
import base from "../vitest.config.ts";

const config = mergeConfig(
  base,
  defineProject({
    root: fileURLToPath(new URL("..", import.meta.url)),
    test: {
      // One file at a time: the load figures must not share the machine with a fault case.
      maxWorkers: 1,
      fileParallelism: false,
      testTimeout: 600_000,
      hookTimeout: 300_000,
    },
  }),
);
// mergeConfig appends arrays: the files to run replace the fault suite's list instead.
config.test = { ...config.test, include: ["test/**/*.test.ts", "bench/load.bench.ts"] };

export default config;
