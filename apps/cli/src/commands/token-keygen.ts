import { calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair } from "jose";
import { KEY_FILE_MODE, PUBLIC_FILE_MODE, writeFilesAtomically } from "../files.ts";
import { DEFAULT_TOKEN_AUDIENCE, DEFAULT_TOKEN_ISSUER } from "./token-mint.ts";
import type { Output } from "../output.ts";

/** File names written by `meshtls token keygen`. */
export const TOKEN_SIGNER_KEY_FILE = "token-signer.key";
export const TOKEN_JWKS_FILE = "jwks.json";

export interface GenerateTokenSignerOptions {
  /** Folder to write `token-signer.key` and `jwks.json` into (created if missing). */
  outDir: string;
  /** Replace existing files. Default false: refuse. */
  force?: boolean;
}

/** The public half of a signer as the identity service's token validator reads it. */
export interface Jwks {
  keys: (Record<string, unknown> & { kid: string; alg: "ES256"; use: "sig" })[];
}

/**
 * `meshtls token keygen`: makes a local ServiceAccount token signer, an ES256
 * (ECDSA P-256) private key in PKCS#8 PEM (mode 0600) and a public JWKS whose
 * `kid` is the RFC 7638 thumbprint of the key, so `token mint` can recompute it.
 */
export async function generateTokenSigner(options: GenerateTokenSignerOptions, output: Output): Promise<void> {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk, "sha256");
  const jwks: Jwks = { keys: [{ ...jwk, kid, alg: "ES256", use: "sig" }] };
  const written = await writeFilesAtomically({
    dir: options.outDir,
    force: options.force ?? false,
    files: [
      { name: TOKEN_SIGNER_KEY_FILE, contents: await exportPKCS8(privateKey), mode: KEY_FILE_MODE },
      { name: TOKEN_JWKS_FILE, contents: `${JSON.stringify(jwks, null, 2)}\n`, mode: PUBLIC_FILE_MODE },
    ],
  });
  for (const file of written) {
    output.out(`wrote ${file}`);
  }
  output.out(`key id (kid): ${kid}`);
  // The JWKS format has no place for the issuer: say it here, so the identity service can be set to match.
  output.out(`token issuer (iss): ${DEFAULT_TOKEN_ISSUER} (what token mint writes, and meshtls-identity --token-issuer expects by default)`);
  output.out(`token audience (aud): ${DEFAULT_TOKEN_AUDIENCE}`);
}
