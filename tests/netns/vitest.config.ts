import { defineProject, mergeConfig } from "vitest/config";
import base from "../../vitest.shared.ts";

export default mergeConfig(
  base,
  defineProject({
    test: {
      name: "@meshtls/netns-suite",
      include: ["test/**/*.test.ts"],
      testTimeout: 120_000,
      hookTimeout: 120_000,
      // Files share the machine's namespaces list (each sweeps its own prefix): one at a time.
      fileParallelism: false,
    },
  }),
);
