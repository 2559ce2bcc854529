import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

// config.ts is a second entry so that other packages' tests parse with the proxy's own parser (the "./config" export).
// Every dependency is bundled (tree-shaken where it is ESM): the sidecar loads only the code it reaches, about 7 MiB
// less idle RSS per pod than loading each package whole (apps/proxy/bench prints idle RSS beside bare node). The
// orig-dst addon stays outside (a native module, loaded only with --transparent); bundled CommonJS gets a `require`.
export default defineConfig({
  ...appOptions,
  entry: ["src/main.ts", "src/config.ts"],
  noExternal: [/^(?!@meshtls\/orig-dst$).*/],
  banner: { js: '#!/usr/bin/env node\nimport { createRequire as __meshtlsCreateRequire } from "node:module";\nconst require = __meshtlsCreateRequire(import.meta.url);' },
});
