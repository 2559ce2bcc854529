import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

export default defineConfig(appOptions);
