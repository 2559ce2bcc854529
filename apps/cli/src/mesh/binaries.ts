import { createRequire } from "node:module";
import path from "node:path";
import { CliError } from "../errors.ts";

/** The app packages whose binaries the CLI starts. */
export type MeshApp = "meshtls-identity" | "meshtls-destination" | "meshtls-proxy";

/**
 * The absolute path of an app's binary (its package's `bin` entry), found
 * through the CLI's own dependencies so that it works from a clone, a
 * workspace link or an installed package. Spawn it with `process.execPath`.
 */
export function locateBinary(app: MeshApp): string {
  const require = createRequire(import.meta.url);
  let packageFile: string;
  try {
    packageFile = require.resolve(`${app}/package.json`);
  } catch (error) {
    throw new CliError("ERR_IO", `cannot find the ${app} package: is meshtls installed with its dependencies?`, { cause: error });
  }
  const manifest = require(packageFile) as { bin?: string | Record<string, string> };
  const bin = typeof manifest.bin === "string" ? manifest.bin : manifest.bin?.[app];
  if (bin === undefined) {
    throw new CliError("ERR_IO", `${packageFile} has no "bin" entry for ${app}`);
  }
  return path.resolve(path.dirname(packageFile), bin);
}
