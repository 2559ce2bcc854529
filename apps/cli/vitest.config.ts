import { defineProject, mergeConfig } from "vitest/config";
import base from "../../vitest.shared.ts";

export default mergeConfig(
  base,
  defineProject({
    test: {
      name: "meshtls",
      testTimeout: 90_000,
      include: ["test/**/*.test.ts", "src/**/*.test.ts"],
      globalSetup: ["test/global-setup.ts"],
      // Process tests start whole meshes (six node processes each): one file at a time on a shared machine.
      fileParallelism: false,
    },
  }),
);
