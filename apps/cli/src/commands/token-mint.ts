import { createHash } from "node:crypto";
import path from "node:path";
import { IDENTITY_TOKEN_AUDIENCE, LOCAL_TOKEN_ISSUER } from "@meshtls/identity";
import { isDnsLabel } from "@meshtls/pki";
import { calculateJwkThumbprint, exportJWK, importPKCS8, SignJWT } from "jose";
import { CliError } from "../errors.ts";
import { KEY_FILE_MODE, readInputText, writeFilesAtomically } from "../files.ts";
import type { Output } from "../output.ts";

/** Defaults of `meshtls token mint`, as the identity service expects them. */
export const DEFAULT_TOKEN_AUDIENCE = IDENTITY_TOKEN_AUDIENCE;
/** The identity service's default `--token-issuer`, so minted tokens and the service agree by default. */
export const DEFAULT_TOKEN_ISSUER = LOCAL_TOKEN_ISSUER;
export const DEFAULT_TOKEN_LIFETIME_MS = 24 * 3_600_000;

export interface MintTokenOptions {
  /** Path of the PKCS#8 PEM ES256 key written by `token keygen`. */
  keyFile: string;
  /** Namespace of the ServiceAccount (DNS-1123 label). */
  namespace: string;
  /** Name of the ServiceAccount (DNS-1123 label). */
  serviceAccount: string;
  /** `aud` claim. Default `identity.l5d.io`. */
  audience?: string;
  /** `iss` claim. Default `https://meshtls.local`. */
  issuer?: string;
  /** Time from `nbf` to `exp`. Default 24 h. */
  lifetimeMs?: number;
  /** `nbf`. Default now. */
  notBefore?: Date;
  /**
   * Write the token to this file (mode 0600, to a temporary name then renamed
   * into place, so a reader such as a proxy's `--token-file` never sees half a
   * token) instead of printing it. Default: print it on stdout.
   */
  outFile?: string;
  /** With `outFile`: replace an existing file. Default false: refuse. */
  force?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * `meshtls token mint`: prints (or, with `outFile`, writes with mode 0600) an ES256 JWT shaped like a Kubernetes projected
 * ServiceAccount token: `iss`, `sub=system:serviceaccount:<ns>:<sa>`,
 * `aud=[audience]`, `iat`, `nbf`, `exp = nbf + lifetime`, and
 * `kubernetes.io: { namespace, serviceaccount: { name, uid } }`. The `uid` is
 * derived from the namespace and name (a stable, UUID-shaped SHA-256 digest)
 * because a local signer has no API server to assign one. The `kid` header is
 * the key's RFC 7638 thumbprint, as written to jwks.json by `token keygen`.
 */
export async function mintToken(options: MintTokenOptions, output: Output): Promise<string> {
  for (const [flag, value] of [
    ["--namespace", options.namespace],
    ["--service-account", options.serviceAccount],
  ] as const) {
    if (!isDnsLabel(value)) {
      throw new CliError(
        "ERR_USAGE",
        `${flag} "${value}" is not a DNS-1123 label (lowercase a-z, 0-9 and "-", at most 63 characters, starting and ending alphanumeric)`,
      );
    }
  }
  const audience = options.audience ?? DEFAULT_TOKEN_AUDIENCE;
  if (audience.length === 0) {
    throw new CliError("ERR_USAGE", "--audience must not be empty");
  }
  const issuer = options.issuer ?? DEFAULT_TOKEN_ISSUER;
  const lifetimeMs = options.lifetimeMs ?? DEFAULT_TOKEN_LIFETIME_MS;
  if (!(lifetimeMs > 0)) {
    throw new CliError("ERR_USAGE", "--lifetime must be positive");
  }
  const now = (options.now ?? (() => new Date()))();
  const notBefore = options.notBefore ?? now;

  const pem = await readInputText(options.keyFile, "token signer key");
  let privateKey: Awaited<ReturnType<typeof importPKCS8>>;
  try {
    privateKey = await importPKCS8(pem, "ES256", { extractable: true });
  } catch (error) {
    throw new CliError(
      "ERR_INPUT",
      `${options.keyFile} is not an ES256 (P-256) PKCS#8 PEM private key; make one with "meshtls token keygen"`,
      { cause: error },
    );
  }
  const { d: _d, ...publicJwk } = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(publicJwk, "sha256");

  const seconds = (date: Date): number => Math.floor(date.getTime() / 1000);
  const token = await new SignJWT({
    "kubernetes.io": {
      namespace: options.namespace,
      serviceaccount: { name: options.serviceAccount, uid: serviceAccountUid(options.namespace, options.serviceAccount) },
    },
  })
    .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
    .setIssuer(issuer)
    .setSubject(`system:serviceaccount:${options.namespace}:${options.serviceAccount}`)
    .setAudience([audience])
    .setIssuedAt(seconds(now))
    .setNotBefore(seconds(notBefore))
    .setExpirationTime(seconds(notBefore) + Math.ceil(lifetimeMs / 1000))
    .sign(privateKey);
  if (options.outFile === undefined) {
    output.out(token);
  } else {
    // A token is a credential: owner-only, like a private key.
    const [written] = await writeFilesAtomically({
      dir: path.dirname(options.outFile),
      force: options.force ?? false,
      files: [{ name: path.basename(options.outFile), contents: `${token}\n`, mode: KEY_FILE_MODE }],
    });
    output.out(`wrote ${written!} (mode 0600)`);
  }
  return token;
}

/** A stable UUID-shaped identifier for a ServiceAccount of a local signer. */
export function serviceAccountUid(namespace: string, serviceAccount: string): string {
  const hex = createHash("sha256").update(`meshtls/serviceaccount/${namespace}/${serviceAccount}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
