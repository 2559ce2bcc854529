import type { Options } from "tsup";

const common = {
  format: ["esm"],
  target: "node24",
  platform: "node",
  sourcemap: true,
  clean: true,
} satisfies Options;

/** Build options of every library in packages/: ESM with declarations, entry src/index.ts. */
export const libraryOptions: Options = { ...common, entry: ["src/index.ts"], dts: true };

/** Build options of every binary in apps/: an executable ESM bundle of src/main.ts. */
export const appOptions: Options = { ...common, entry: ["src/main.ts"], banner: { js: "#!/usr/bin/env node" } };
