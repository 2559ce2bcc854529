import { defineProject, mergeConfig } from "vitest/config";
import base from "../../vitest.shared.ts";

// Process tests start real servers and time certificate renewals: run the files one after another
// on this shared machine rather than competing for its cores.
export default mergeConfig(base, defineProject({ test: { name: "meshtls-identity", fileParallelism: false } }));
