import { defineProject, mergeConfig } from "vitest/config";
import base from "../../vitest.shared.ts";

export default mergeConfig(
  base,
  defineProject({
    test: {
      name: "@meshtls/reliability-suite",
      include: ["test/**/*.test.ts"],
      globalSetup: ["test/global-setup.ts"],
      testTimeout: 180_000,
      hookTimeout: 120_000,
      // Two meshes at a time: each file mostly waits (for leaves to age, for restarts), on a 2-core machine.
      maxWorkers: 2,
    },
  }),
);
