import { defineConfig, type Options } from "tsup";
import { appOptions } from "../../tsup.shared.ts";

type EsbuildPlugin = NonNullable<Options["esbuildPlugins"]>[number];

/**
 * node:http and node:https as `require` (the banner's): an ESM import of a builtin reads every export, and node:http's
 * lazy WebSocket, CloseEvent and MessageEvent getters then load node's bundled undici: 14 MiB of RSS in bare node
 * (`node --input-type=module -e 'import "node:http"'`, 1.4 MiB with `require`), 1.5 MiB of the proxy's idle RSS.
 * Named imports stay lazy property reads. The other builtins gain nothing measurable this way.
 */
const httpThroughRequire: EsbuildPlugin = {
  name: "http-through-require",
  setup(build) {
    build.onResolve({ filter: /^(node:)?https?$/ }, (args) => (args.namespace === "http-through-require" ? undefined : { path: args.path.replace(/^(node:)?/, "node:"), namespace: "http-through-require" }));
    build.onLoad({ filter: /.*/, namespace: "http-through-require" }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: "js" }));
  },
};

/**
 * Packages the proxy bundles but whose imports it never uses, marked free of side effects so that the bundle drops
 * them: @meshtls/destination imports yaml for its registry and policy files (the destination service's), never read
 * by the proxy; without the mark yaml's 116 KB were evaluated at start, 0.7 MiB of idle RSS.
 */
const unusedWhenBundled: EsbuildPlugin = {
  name: "unused-when-bundled",
  setup(build) {
    build.onResolve({ filter: /^yaml$/ }, async (args) => {
      if (args.pluginData === "unused-when-bundled") return undefined;
      const resolved = await build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir: args.resolveDir, pluginData: "unused-when-bundled" });
      return { ...resolved, sideEffects: false };
    });
  },
};

// dist/main.js is start.ts: it turns V8's optimizing tiers off before any other module is evaluated, then imports
// main.ts (a chunk of its own); see startup-tiers.ts. config.ts is a second entry so that other packages' tests parse
// with the proxy's own parser (the "./config" export).
// Every dependency is bundled (tree-shaken where it is ESM): the sidecar loads only the code it reaches, about 7 MiB
// less idle RSS per pod than loading each package whole (apps/proxy/bench prints idle RSS beside bare node). The
// orig-dst addon stays outside (a native module, loaded only with --transparent); bundled CommonJS gets a `require`.
// Minified (dist/*.map maps positions and names back, node --enable-source-maps): node holds a module's source in
// memory, so 2.3 → 1.1 MB of code is about 2 MiB less idle RSS per proxy. Names are not kept: esbuild's keepNames
// wraps every function, closures made per connection included, in a call that defines its `name` (about a tenth of
// the proxy's CPU per new opaque connection); logs carry error `code`s, and our error classes set `name` themselves.
export default defineConfig({
  ...appOptions,
  entry: { main: "src/start.ts", config: "src/config.ts" },
  noExternal: [/^(?!@meshtls\/orig-dst$).*/],
  minify: true,
  esbuildPlugins: [httpThroughRequire, unusedWhenBundled],
  banner: { js: '#!/usr/bin/env node\nimport { createRequire as __meshtlsCreateRequire } from "node:module";\nconst require = __meshtlsCreateRequire(import.meta.url);' },
});
