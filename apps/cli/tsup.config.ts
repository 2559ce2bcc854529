import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

export default defineConfig({
  ...appOptions,
  // The demo's workload app is a second entry: `meshtls demo` starts it as its own process.
  entry: { main: "src/main.ts", "workload-app": "src/demo/workload-app.ts" },
});
