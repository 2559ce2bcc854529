import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, UnsecuredJWT } from "jose";
import type { JSONWebKeySet, JWTPayload } from "jose";
import { isDnsLabel } from "@meshtls/pki";
import { IdentityError } from "./errors.ts";
import type { IdentityErrorCode } from "./errors.ts";
import { createLocalJwksKeys } from "./local-jwks-keys.ts";
import type { TokenIdentity, TokenValidator } from "./token-validator.ts";

/** The audience Linkerd-compatible identity tokens are bound to. */
export const IDENTITY_TOKEN_AUDIENCE = "identity.l5d.io";

/**
 * The issuer of the local token signer (`meshtls token keygen` / `token mint`,
 * standing in for Kubernetes): what `meshtls-identity --token-issuer` expects
 * unless told otherwise. A cluster's own issuer is set explicitly.
 */
export const LOCAL_TOKEN_ISSUER = "https://meshtls.local";

/** The token algorithms accepted unless told otherwise. */
export const DEFAULT_TOKEN_ALGORITHMS: readonly string[] = ["ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "EdDSA"];
const SUBJECT_PREFIX = "system:serviceaccount:";
const UNSECURED_HEADER = Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url");

export interface JwksTokenValidatorOptions {
  /**
   * The signer's public keys: a fixed JWKS object; a URL fetched (and cached) by jose; or a function
   * returning the set in use (e.g. `createJwksFileStore(...).current`), read at each validation. Keys
   * are imported again only when the function returns a different object.
   */
  jwks: JSONWebKeySet | URL | (() => JSONWebKeySet);
  /** Expected `iss` claim (one of, if an array). Required: a token from any other issuer is refused. */
  issuer: string | string[];
  /** Expected `aud`. Default `"identity.l5d.io"`. */
  audience?: string;
  /** Allowance for clock differences when checking `exp` and `nbf`, in milliseconds. Default 5000. */
  clockToleranceMs?: number;
  /** Accepted `alg` header values. Default ES256, ES384, RS256, RS384, RS512, PS256, EdDSA; `none` is never accepted. */
  algorithms?: string[];
  /** Largest token accepted, in bytes. Default 16384. */
  maxTokenBytes?: number;
  /** Timeout for fetching a remote JWKS, in milliseconds. Default 5000. */
  fetchTimeoutMs?: number;
  /**
   * Accept an `http:` JWKS URL whose host is loopback (`localhost`, 127.0.0.0/8, `[::1]`). Default false:
   * a remote JWKS is fetched over `https:` only, since whoever can change it in transit can add a signing key.
   */
  allowInsecureLoopbackJwks?: boolean;
  /** Clock. Default `() => new Date()`. */
  now?: () => Date;
}

/**
 * A TokenValidator for JWTs signed by a key in a JWKS: the local token
 * signer (`meshtls token keygen`) or a Kubernetes API server's
 * ServiceAccount issuer. Requires `aud`, `iss`, `exp`, `sub =
 * system:serviceaccount:<ns>:<sa>`, and a `kubernetes.io` claim naming the
 * same namespace and ServiceAccount.
 *
 * A local JWKS's ES256/ES384 signatures are checked with node:crypto
 * (`createLocalJwksKeys`, about 80 µs a token against jose's 150–200 µs, of a
 * Certify call's ~1.1 ms server CPU) and the claims by jose. `internal.fastPath:
 * false` (not exported from the package) verifies with jose alone: the
 * differential test holds both to the same verdict on generated tokens.
 */
export function createJwksTokenValidator(options: JwksTokenValidatorOptions, internal: { fastPath?: boolean } = {}): TokenValidator {
  const issuers = Array.isArray(options.issuer) ? options.issuer : [options.issuer];
  if (issuers.length === 0 || issuers.some((i) => typeof i !== "string" || i.length === 0)) {
    throw new IdentityError("ERR_CONFIG_INVALID", "createJwksTokenValidator: an expected token issuer is required");
  }
  const audience = options.audience ?? IDENTITY_TOKEN_AUDIENCE;
  const clockToleranceMs = options.clockToleranceMs ?? 5000;
  const algorithms = (options.algorithms ?? [...DEFAULT_TOKEN_ALGORITHMS]).filter((a) => a.toLowerCase() !== "none");
  const maxTokenBytes = options.maxTokenBytes ?? 16_384;
  const now = options.now ?? (() => new Date());
  const source = options.jwks;
  const remote = source instanceof URL;
  const decoder = new TextDecoder("utf-8", { fatal: true });

  type JoseKeys = ReturnType<typeof createLocalJWKSet> | ReturnType<typeof createRemoteJWKSet>;
  /** The keys of one set: jose's, and (for a local set) the same keys imported into node:crypto for the fast path. */
  interface Imported {
    keys: JoseKeys;
    localKeys: ReturnType<typeof createLocalJwksKeys> | undefined;
  }
  const importLocal = (set: JSONWebKeySet): Imported => ({
    keys: createLocalJWKSet(set),
    localKeys: internal.fastPath === false ? undefined : createLocalJwksKeys(set, algorithms),
  });
  if (source instanceof URL) checkJwksUrl(source, options.allowInsecureLoopbackJwks === true);
  let fixed: Imported | undefined;
  try {
    if (source instanceof URL) fixed = { keys: createRemoteJWKSet(source, { timeoutDuration: options.fetchTimeoutMs ?? 5000 }), localKeys: undefined };
    // A fixed local JWKS: its keys are imported once, and common tokens are verified synchronously.
    else if (typeof source !== "function") fixed = importLocal(source);
  } catch (error) {
    throw new IdentityError("ERR_CONFIG_INVALID", `the token JWKS is not usable: ${(error as Error).message}`, { cause: error });
  }
  // A followed JWKS: the set is read per validation, its keys imported again only when it is a new object.
  let followedSet: JSONWebKeySet | undefined;
  let followed: Imported | IdentityError | undefined;
  const keysNow = (): Imported => {
    if (fixed) return fixed;
    const set = (source as () => JSONWebKeySet)();
    if (set !== followedSet || followed === undefined) {
      followedSet = set;
      try {
        followed = importLocal(set);
      } catch (error) {
        // Fail closed: a set that cannot be used refuses every token until the source returns another one.
        followed = new IdentityError("ERR_TOKEN_UNAVAILABLE", `the token JWKS is not usable: ${(error as Error).message}`, { cause: error });
      }
    }
    if (followed instanceof IdentityError) throw followed;
    return followed;
  };
  const claimOptions = () => ({
    issuer: issuers,
    audience,
    clockTolerance: Math.floor(clockToleranceMs / 1000),
    currentDate: now(),
    requiredClaims: ["exp", "sub"],
  });

  return {
    async validate(token, validateOptions) {
      if (validateOptions?.signal?.aborted) {
        throw new IdentityError("ERR_TOKEN_UNAVAILABLE", "token validation was cancelled");
      }
      if (token.byteLength > maxTokenBytes) {
        throw new IdentityError("ERR_TOKEN_MALFORMED", `token is ${token.byteLength} bytes; the limit is ${maxTokenBytes}`);
      }
      let jwt: string;
      try {
        jwt = decoder.decode(token).trim();
      } catch (error) {
        throw new IdentityError("ERR_TOKEN_MALFORMED", "token is not UTF-8 text; expected a JWT", { cause: error });
      }
      let header: Record<string, unknown>;
      try {
        header = decodeProtectedHeader(jwt) as Record<string, unknown>;
      } catch (error) {
        throw new IdentityError("ERR_TOKEN_MALFORMED", "token is not a JWT (header.payload.signature)", { cause: error });
      }
      const alg = header["alg"];
      if (typeof alg !== "string" || !algorithms.includes(alg)) {
        throw new IdentityError(
          "ERR_TOKEN_ALGORITHM",
          `token alg ${JSON.stringify(alg)} is not accepted; expected one of ${algorithms.join(", ")}`,
        );
      }
      const { keys, localKeys } = keysNow();
      let payload: JWTPayload;
      const verified = localKeys?.verify(jwt, header);
      try {
        if (verified === false) throw new errors.JWSSignatureVerificationFailed();
        if (verified === true) {
          // The signature is checked; jose checks the claims exactly as jwtVerify would (it reads only
          // the payload segment; the stand-in header "none" is what its claims-only entry point requires).
          ({ payload } = UnsecuredJWT.decode(`${UNSECURED_HEADER}.${jwt.slice(jwt.indexOf(".") + 1, jwt.lastIndexOf("."))}.`, claimOptions()));
        } else {
          ({ payload } = await jwtVerify(jwt, keys, { ...claimOptions(), algorithms }));
        }
      } catch (error) {
        throw mapJoseError(error, { audience, issuers, remote });
      }
      return identityFromClaims(payload);
    },
  };
}

/** A remote JWKS is fetched over https; http only for a loopback host when allowed. */
function checkJwksUrl(url: URL, allowInsecureLoopback: boolean): void {
  if (url.protocol === "https:") return;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const loopback = host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (url.protocol === "http:" && loopback && allowInsecureLoopback) return;
  throw new IdentityError(
    "ERR_CONFIG_INVALID",
    url.protocol === "http:"
      ? `the token JWKS URL ${url.href} is http: fetch it over https (http is accepted only for a loopback host with allowInsecureLoopbackJwks)`
      : `the token JWKS URL ${url.href} is not https`,
  );
}

function mapJoseError(error: unknown, ctx: { audience: string; issuers: string[]; remote: boolean }): IdentityError {
  const fail = (code: IdentityErrorCode, message: string) => new IdentityError(code, message, { cause: error });
  if (error instanceof errors.JWTExpired) {
    const exp = typeof error.payload.exp === "number" ? new Date(error.payload.exp * 1000).toISOString() : "unknown";
    return fail("ERR_TOKEN_EXPIRED", `token expired at ${exp}; mint or project a fresh token`);
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    const got = (error.payload as Record<string, unknown>)[error.claim];
    switch (error.claim) {
      case "aud":
        return fail("ERR_TOKEN_AUDIENCE", `token audience ${JSON.stringify(got ?? null)} does not include "${ctx.audience}"; request a token with that audience`);
      case "iss":
        return fail("ERR_TOKEN_ISSUER", `token issuer ${JSON.stringify(got ?? null)} is not the expected ${ctx.issuers.map((i) => JSON.stringify(i)).join(" or ")}`);
      case "nbf": {
        const nbf = typeof got === "number" ? new Date(got * 1000).toISOString() : "unknown";
        return fail("ERR_TOKEN_NOT_YET_VALID", `token is not valid before ${nbf}; check the clocks of signer and identity service`);
      }
      case "iat":
        return fail("ERR_TOKEN_NOT_YET_VALID", "token was issued in the future; check the clocks of signer and identity service");
      default:
        return fail("ERR_TOKEN_CLAIMS", `token claim "${error.claim}" is invalid: ${error.message}`);
    }
  }
  if (error instanceof errors.JWKSNoMatchingKey) {
    return fail("ERR_TOKEN_UNKNOWN_KEY", "token is signed by a key that is not in the trusted JWKS (unknown kid or key type)");
  }
  if (error instanceof errors.JWKSMultipleMatchingKeys) {
    return fail("ERR_TOKEN_UNKNOWN_KEY", "token does not name a kid and several JWKS keys match; refusing to guess");
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return fail("ERR_TOKEN_SIGNATURE", "token signature does not verify against the trusted JWKS key");
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) {
    return fail("ERR_TOKEN_ALGORITHM", `token algorithm is not accepted: ${(error as Error).message}`);
  }
  if (error instanceof errors.JWKSTimeout || (ctx.remote && error instanceof errors.JOSEError && !(error instanceof errors.JWTInvalid || error instanceof errors.JWSInvalid))) {
    return fail("ERR_TOKEN_UNAVAILABLE", `the token JWKS could not be fetched: ${(error as Error).message}`);
  }
  if (error instanceof errors.JWTInvalid || error instanceof errors.JWSInvalid) {
    return fail("ERR_TOKEN_MALFORMED", `token is not a valid JWT: ${error.message}`);
  }
  if (ctx.remote) {
    return fail("ERR_TOKEN_UNAVAILABLE", `the token JWKS could not be fetched: ${error instanceof Error ? error.message : String(error)}`);
  }
  return fail("ERR_TOKEN_MALFORMED", `token could not be verified: ${error instanceof Error ? error.message : String(error)}`);
}

function identityFromClaims(payload: JWTPayload): TokenIdentity {
  const sub = payload.sub;
  if (typeof sub !== "string" || !sub.startsWith(SUBJECT_PREFIX)) {
    throw new IdentityError("ERR_TOKEN_CLAIMS", `token subject ${JSON.stringify(sub ?? null)} is not a ServiceAccount (system:serviceaccount:<namespace>:<name>)`);
  }
  const parts = sub.slice(SUBJECT_PREFIX.length).split(":");
  const [namespace, serviceAccount] = parts;
  if (parts.length !== 2 || namespace === undefined || serviceAccount === undefined || !isDnsLabel(namespace) || !isDnsLabel(serviceAccount)) {
    throw new IdentityError("ERR_TOKEN_CLAIMS", `token subject ${JSON.stringify(sub)} does not name a namespace and ServiceAccount that are DNS-1123 labels`);
  }
  const k8s = (payload as Record<string, unknown>)["kubernetes.io"];
  const k8sNamespace = isRecord(k8s) ? k8s["namespace"] : undefined;
  const k8sSa = isRecord(k8s) && isRecord(k8s["serviceaccount"]) ? k8s["serviceaccount"]["name"] : undefined;
  if (typeof k8sNamespace !== "string" || typeof k8sSa !== "string") {
    throw new IdentityError("ERR_TOKEN_CLAIMS", 'token lacks the "kubernetes.io" claim with namespace and serviceaccount.name');
  }
  if (k8sNamespace !== namespace || k8sSa !== serviceAccount) {
    throw new IdentityError(
      "ERR_TOKEN_CLAIMS",
      `token claims disagree: sub names ${namespace}/${serviceAccount} but "kubernetes.io" names ${k8sNamespace}/${k8sSa}`,
    );
  }
  const identity: TokenIdentity = { namespace, serviceAccount, subject: sub };
  if (typeof payload.exp === "number") identity.expiresAt = new Date(payload.exp * 1000);
  return identity;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
