import { createPublicKey } from "node:crypto";
import type { JsonWebKey } from "node:crypto";
import type { JSONWebKeySet } from "jose";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import { createFollowedFile, FileRefused } from "@meshtls/runtime";
import type { FollowedFileResult } from "@meshtls/runtime";
import { DEFAULT_TOKEN_ALGORITHMS } from "./jwks-token-validator.ts";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";

/** Why a JWKS file was refused; the `reason` label of `identity_token_jwks_rejected_total`. */
export type JwksFileRejection = "unreadable" | "too_large" | "bad_json" | "not_jwks" | "empty" | "private_key" | "bad_key" | "no_usable_key";

/** The outcome of one content check of the JWKS file. */
export type JwksFileReloadResult =
  | { result: "loaded"; jwks: JSONWebKeySet }
  | { result: "unchanged" }
  | { result: "rejected"; rejection: JwksFileRejection; reason: string };

export interface JwksFileStore {
  /**
   * The set in use; `{ keys: [] }` (every token refused) before the first successful load.
   * The same object until a new set is loaded, so a reader can cache what it derives from it.
   */
  current(): JSONWebKeySet;
  /** Reads the file now; a changed, valid set replaces the current one. */
  reload(): Promise<JwksFileReloadResult>;
  /** Loads once, then follows the file (fs.watch on its folder + periodic content hash). Resolves with the first result. */
  start(): Promise<JwksFileReloadResult>;
  /** Called with each newly loaded set. Returns an unsubscribe function. */
  subscribe(listener: (jwks: JSONWebKeySet) => void): () => void;
  /** Stops following the file. */
  close(): void;
}

export interface JwksFileStoreOptions {
  /** The JWKS file of the token signer (`{"keys": [...]}`), e.g. `meshtls token keygen`'s jwks.json or a mounted ConfigMap. */
  file: string;
  /** Interval of the content check that catches what fs.watch misses (Kubernetes `..data` symlink swaps), in milliseconds. Default `FOLLOW_DEFAULTS.pollIntervalMs` (5000). */
  pollIntervalMs?: number;
  /** Delay between a file event and the check, so a write settles, in milliseconds. Default `FOLLOW_DEFAULTS.settleMs` (100). */
  settleMs?: number;
  /** Largest file accepted, in bytes. Default 1 MiB. */
  maxBytes?: number;
  /** The token algorithms the validator accepts: a set needs at least one key usable for one of them. Default: the validator's default. */
  algorithms?: readonly string[];
  logger?: Logger;
  /** Registry for `identity_token_jwks*`. Default: metrics are not registered. */
  metricsRegistry?: Registry;
}

/** Largest JWKS file accepted by default: far above any signer's set (a few keys of under 1 KiB each). */
const DEFAULT_MAX_BYTES = 1024 * 1024;

class Refused extends FileRefused<JwksFileRejection> {}

/** The set before the first successful load: every token is refused. */
const NO_KEYS: JSONWebKeySet = { keys: [] };

/** The JWS algorithms a public key of this type can verify (jose's own key selection: kty, and crv for EC and OKP). */
function algorithmsFor(jwk: Record<string, unknown>): string[] {
  switch (jwk["kty"]) {
    case "EC":
      return jwk["crv"] === "P-256" ? ["ES256"] : jwk["crv"] === "P-384" ? ["ES384"] : jwk["crv"] === "P-521" ? ["ES512"] : [];
    case "RSA":
      return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    case "OKP":
      return jwk["crv"] === "Ed25519" || jwk["crv"] === "Ed448" ? ["EdDSA", "Ed25519"] : [];
    default:
      return [];
  }
}

/**
 * Checks a JWKS: JSON `{"keys": [...]}` with at least one key, every key an importable public key,
 * and at least one usable (by `alg`, `use`, `key_ops` and its type) for an accepted algorithm.
 */
function parseJwks(file: string, bytes: Buffer, algorithms: readonly string[]): JSONWebKeySet {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Refused("bad_json", `${file} is not UTF-8 text`);
  }
  if (text.trim() === "") throw new Refused("empty", `${file} is empty; it must hold the token signer's JWKS`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Refused("bad_json", `${file} is not JSON: ${(error as Error).message}`);
  }
  const keys = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as { keys?: unknown }).keys : undefined;
  if (!Array.isArray(keys)) throw new Refused("not_jwks", `${file} is not a JWKS (expected {"keys": [...]})`);
  if (keys.length === 0) throw new Refused("empty", `${file} holds no keys ("keys" is empty)`);
  const allowed = new Set(algorithms);
  let usable = 0;
  for (const [index, jwk] of keys.entries()) {
    const name = `key ${index + 1}${typeof (jwk as { kid?: unknown } | null)?.kid === "string" ? ` (kid ${JSON.stringify((jwk as { kid: string }).kid)})` : ""}`;
    if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk)) throw new Refused("bad_key", `${file}: ${name} is not a JWK object`);
    const key = jwk as Record<string, unknown>;
    // A verifier's set never needs a private or secret key: one here means the wrong file was published.
    if (key["d"] !== undefined || key["k"] !== undefined || key["kty"] === "oct") {
      throw new Refused("private_key", `${file}: ${name} is a private or secret key; publish only the signer's public keys`);
    }
    try {
      createPublicKey({ key: key as JsonWebKey, format: "jwk" });
    } catch (error) {
      throw new Refused("bad_key", `${file}: ${name} is not an importable public key: ${(error as Error).message}`);
    }
    const ops = key["key_ops"];
    if (key["use"] !== undefined && key["use"] !== "sig") continue;
    if (ops !== undefined && !(Array.isArray(ops) && ops.includes("verify"))) continue;
    const candidates = typeof key["alg"] === "string" ? algorithmsFor(key).filter((a) => a === key["alg"]) : algorithmsFor(key);
    if (candidates.some((a) => allowed.has(a))) usable++;
  }
  if (usable === 0) {
    throw new Refused("no_usable_key", `${file}: no key can verify tokens signed with ${[...allowed].join(", ")} (check each key's alg, use, key_ops and type)`);
  }
  return { keys } as JSONWebKeySet;
}

/**
 * Creates a store that loads the token signer's JWKS file and follows its
 * content, so a signer key rotation (a new `kid` in the file) is accepted
 * without a restart. A file that cannot be read, is oversized, not JSON, not
 * a JWKS, holds no key, a private key or a key that cannot be imported, or no
 * key usable for the accepted algorithms never replaces the current set; the
 * reason is logged and counted.
 */
export function createJwksFileStore(options: JwksFileStoreOptions): JwksFileStore {
  const logger = options.logger ?? noopLogger;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const algorithms = (options.algorithms ?? DEFAULT_TOKEN_ALGORITHMS).filter((a) => a.toLowerCase() !== "none");
  const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
  const loaded = new Counter({ name: "identity_token_jwks_loaded_total", help: "Token JWKS files loaded (at start and on change).", registers });
  const rejected = new Counter({
    name: "identity_token_jwks_rejected_total",
    help: "Token JWKS files refused, by reason; the current set stays in use.",
    labelNames: ["reason"],
    registers,
  });

  const followed = createFollowedFile<JSONWebKeySet, JwksFileRejection>({
    file: options.file,
    what: "token JWKS",
    noun: "set",
    maxBytes,
    pollIntervalMs: options.pollIntervalMs,
    settleMs: options.settleMs,
    parse: (bytes) => parseJwks(options.file, bytes, algorithms),
    otherRejection: "bad_key",
    describe: (jwks) => ({ keys: jwks.keys.length, kids: jwks.keys.map((k) => k.kid ?? null) }),
    size: (jwks) => jwks.keys.length,
    loaded,
    rejected,
    logger,
  });
  const asResult = (r: FollowedFileResult<JSONWebKeySet, JwksFileRejection>): JwksFileReloadResult =>
    r.result === "loaded" ? { result: "loaded", jwks: r.value } : r;

  new Gauge({
    name: "identity_token_jwks_keys",
    help: "Number of keys in the token JWKS in use; 0 before the first load.",
    registers,
    // With meshtls-identity --workers, the smallest value is the one to alert on (not the sum).
    aggregator: "min",
    collect() {
      this.set(followed.current()?.keys.length ?? 0);
    },
  });

  return {
    current: () => followed.current() ?? NO_KEYS,
    reload: async () => asResult(await followed.reload()),
    start: async () => asResult(await followed.start()),
    subscribe: (listener) => followed.subscribe(listener),
    close: () => followed.close(),
  };
}
