import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

// config.ts is a second entry so that meshtls install's tests parse the Deployment's arguments with this parser (the "./config" export).
export default defineConfig({ ...appOptions, entry: ["src/main.ts", "src/config.ts"] });
