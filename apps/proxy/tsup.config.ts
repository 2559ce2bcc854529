import { defineConfig } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

// config.ts is a second entry so that other packages' tests parse with the proxy's own parser (the "./config" export).
// Every dependency is bundled (tree-shaken where it is ESM): the sidecar loads only the code it reaches, about 7 MiB
// less idle RSS per pod than loading each package whole (apps/proxy/bench prints idle RSS beside bare node). The
// orig-dst addon stays outside (a native module, loaded only with --transparent); bundled CommonJS gets a `require`.
// Minified (names kept for stack traces and logs; dist/*.map maps positions back, node --enable-source-maps): node
// holds a module's source in memory, so 2.3 → 1.1 MB of code is about 2 MiB less idle RSS per proxy.
export default defineConfig({
  ...appOptions,
  entry: ["src/main.ts", "src/config.ts"],
  noExternal: [/^(?!@meshtls\/orig-dst$).*/],
  minify: true,
  keepNames: true,
  banner: { js: '#!/usr/bin/env node\nimport { createRequire as __meshtlsCreateRequire } from "node:module";\nconst require = __meshtlsCreateRequire(import.meta.url);' },
});
