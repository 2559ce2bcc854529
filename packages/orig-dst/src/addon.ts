import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { OrigDstError } from "./errors.ts";

/** What the native addon exports (native/orig_dst.c). */
export interface NativeOrigDst {
  /** Throws an Error whose `code` is the errno name (`ENOENT`: no original destination known). */
  originalDestination(fd: number, family: 4 | 6): { address: string; port: number; family: 4 | 6 };
}

// src/addon.ts and the bundled dist/index.js both sit one folder below the package root.
const addonFile = fileURLToPath(new URL("../build/Release/orig_dst.node", import.meta.url));
const unavailableFile = fileURLToPath(new URL("../build/unavailable.json", import.meta.url));

/**
 * Loads the addon built at install, or throws `ERR_ORIG_DST_UNAVAILABLE`
 * with the install step's reason. Node caches the loaded module.
 */
export function loadNativeAddon(): NativeOrigDst {
  if (process.platform !== "linux") {
    throw new OrigDstError("ERR_ORIG_DST_UNAVAILABLE", `original destinations (SO_ORIGINAL_DST) are read on Linux only, not on ${process.platform}`);
  }
  if (!existsSync(addonFile)) {
    let reason = "the install step did not run (run `pnpm install`, or `node scripts/build-addon.mjs` in packages/orig-dst)";
    if (existsSync(unavailableFile)) {
      try {
        reason = String((JSON.parse(readFileSync(unavailableFile, "utf8")) as { reason?: unknown }).reason);
      } catch (error) {
        reason = `unreadable ${unavailableFile}: ${String(error)}`;
      }
    }
    throw new OrigDstError("ERR_ORIG_DST_UNAVAILABLE", `the SO_ORIGINAL_DST addon is not built: ${reason}`);
  }
  try {
    return createRequire(import.meta.url)(addonFile) as NativeOrigDst;
  } catch (cause) {
    throw new OrigDstError("ERR_ORIG_DST_UNAVAILABLE", `the SO_ORIGINAL_DST addon ${addonFile} does not load: ${String(cause)}`, { cause });
  }
}
