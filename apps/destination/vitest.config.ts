import { defineProject, mergeConfig } from "vitest/config";
import base from "../../vitest.shared.ts";

// Process tests start servers and buf curl clients: one file at a time keeps a 2-core runner responsive.
export default mergeConfig(base, defineProject({ test: { name: "meshtls-destination", fileParallelism: false } }));
