import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

// config.ts is a second entry so that other packages' tests parse with the proxy's own parser (the "./config" export).
export default defineConfig({ ...appOptions, entry: ["src/main.ts", "src/config.ts"] });
