import { defineConfig } from "tsup";

export default defineConfig({
  // The demo's workload app is a second entry: `meshtls demo` starts it as its own process.
  entry: { main: "src/main.ts", "workload-app": "src/demo/workload-app.ts" },
  format: ["esm"],
  target: "node20",
  platform: "node",
  sourcemap: true,
  clean: true,
  banner: { js: "#!/usr/bin/env node" },
});
