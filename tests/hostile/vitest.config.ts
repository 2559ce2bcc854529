import { defineProject, mergeConfig } from "vitest/config";
import { BaseSequencer } from "vitest/node";
import type { TestSpecification } from "vitest/node";
import base from "../../vitest.shared.ts";

/**
 * The slow-loris file mostly waits for servers to time its trickled connections out, so it starts first
 * and runs beside the attack files (two workers); those run one after another in the other worker.
 */
class SlowLorisFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const first = (f: TestSpecification): number => (f.moduleId.endsWith("slow-loris.test.ts") ? 0 : 1);
    return [...sorted].sort((a, b) => first(a) - first(b));
  }
}

export default mergeConfig(
  base,
  defineProject({
    test: {
      name: "@meshtls/hostile-suite",
      include: ["test/**/*.test.ts"],
      globalSetup: ["test/global-setup.ts"],
      testTimeout: 120_000,
      hookTimeout: 120_000,
      maxWorkers: 2,
      // The slow-loris cases wait side by side (it.concurrent): all of them at once.
      maxConcurrency: 20,
      sequence: { sequencer: SlowLorisFirst },
    },
  }),
);
