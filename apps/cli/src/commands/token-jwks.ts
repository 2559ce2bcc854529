import path from "node:path";
import { CliError } from "../errors.ts";
import { PUBLIC_FILE_MODE, readInputText, writeFilesAtomically } from "../files.ts";
import type { Output } from "../output.ts";

export interface MergeJwksOptions {
  /** The JWKS file to write (e.g. the identity service's `--token-jwks`); replaced only with `force`. */
  outFile: string;
  /** JWKS files whose keys are merged, in order; the output may be one of them. */
  inputFiles: string[];
  /** Replace an existing `outFile`. Default false: refuse. */
  force?: boolean;
}

/**
 * `meshtls token jwks`: merges the public keys of JWKS files (old + new signer
 * during a rotation) into one, dropping a key whose `kid` was already taken.
 * Every input is read before anything is written, and the file is replaced in
 * one rename, so the output may be one of the inputs and a follower of it (the
 * identity service) never sees half a set. Refuses private keys, keys without
 * `kid` and input that is not a JWKS.
 */
export async function mergeJwks(options: MergeJwksOptions, output: Output): Promise<void> {
  if (options.inputFiles.length === 0) throw new CliError("ERR_USAGE", "give at least one JWKS file to merge");
  const keys: Record<string, unknown>[] = [];
  const kids = new Set<string>();
  for (const file of options.inputFiles) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readInputText(file, "JWKS"));
    } catch (error) {
      if (error instanceof CliError) throw error;
      throw new CliError("ERR_INPUT", `${file} is not JSON`, { cause: error });
    }
    const list = (parsed as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(list)) throw new CliError("ERR_INPUT", `${file} is not a JWKS (no "keys" array)`);
    for (const key of list as unknown[]) {
      if (typeof key !== "object" || key === null) throw new CliError("ERR_INPUT", `${file}: a key is not an object`);
      const jwk = key as Record<string, unknown>;
      if ("d" in jwk) throw new CliError("ERR_INPUT", `${file} holds a private key; a JWKS for verifiers carries public keys only`);
      if (typeof jwk.kid !== "string" || jwk.kid === "") throw new CliError("ERR_INPUT", `${file}: a key has no "kid"`);
      if (kids.has(jwk.kid)) {
        output.err(`note: skipped the second key with kid ${jwk.kid} (from ${file})`);
        continue;
      }
      kids.add(jwk.kid);
      keys.push(jwk);
      output.out(`key ${jwk.kid} (${typeof jwk.alg === "string" ? jwk.alg : "no alg"}) from ${file}`);
    }
  }
  const target = path.resolve(options.outFile);
  const [written] = await writeFilesAtomically({
    dir: path.dirname(target),
    force: options.force ?? false,
    files: [{ name: path.basename(target), contents: `${JSON.stringify({ keys }, null, 2)}\n`, mode: PUBLIC_FILE_MODE }],
  });
  output.out(`wrote ${written!} with ${keys.length} key${keys.length === 1 ? "" : "s"}`);
}
