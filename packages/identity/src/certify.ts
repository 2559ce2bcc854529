import { issueLeaf, parseCsr } from "@meshtls/pki";
import type { CsrSummary } from "@meshtls/pki";
import { Counter, Histogram } from "prom-client";
import type { Registry } from "prom-client";
import { checkCsr } from "./csr-policy.ts";
import { IdentityError } from "./errors.ts";
import type { IdentityErrorCode } from "./errors.ts";
import { createIdentityPolicy } from "./identity-policy.ts";
import { readLeafFields } from "./leaf-fields.ts";
import type { LeafFields } from "./leaf-fields.ts";
import type { IdentityPolicy } from "./identity-policy.ts";
import type { IssuerSource } from "./issuer.ts";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";
import type { TokenValidator } from "./token-validator.ts";

/** The largest Certify request accepted, in bytes (64 KiB). */
export const MAX_CERTIFY_REQUEST_BYTES = 64 * 1024;

/** A Certify request, independent of the wire. */
export interface CertifyInput {
  identity: string;
  token: Uint8Array;
  /** PKCS#10, DER. */
  certificateSigningRequest: Uint8Array;
}

/** A signed leaf with what the caller needs to use it. */
export interface CertifyOutput {
  identity: string;
  leaf: Uint8Array;
  /** The issuer first, up towards (never including) the anchor; DER. */
  intermediates: Uint8Array[];
  /** The leaf's notAfter. */
  validUntil: Date;
  /** Leaf serial number, hex. */
  serialNumber: string;
}

export interface CertifyOptions {
  issuerStore: IssuerSource;
  tokenValidator: TokenValidator;
  /** Default "cluster.local". */
  trustDomain?: string;
  /** Default "meshtls". */
  controlNamespace?: string;
  /** Replaces the Linkerd naming policy built from trustDomain and controlNamespace. */
  identityPolicy?: IdentityPolicy;
  /** Leaf lifetime, in milliseconds. Default 24 h. */
  lifetimeMs?: number;
  /** Clock-skew allowance added before notBefore and after notAfter, in milliseconds. Default 20 s. */
  skewMs?: number;
  /** Largest request (identity + token + CSR), in bytes. Default 65536. */
  maxRequestBytes?: number;
  now?: () => Date;
  logger?: Logger;
  /** Registry for `identity_certify_total` and `identity_certify_duration_seconds`. Default: not registered. */
  metricsRegistry?: Registry;
}

/** The Certify operation: checks in a fixed order (see README), then signs. Rejects with IdentityError. */
export type CertifyHandler = (input: CertifyInput, options?: { signal?: AbortSignal }) => Promise<CertifyOutput>;

/** Creates the protocol-free Certify handler from its replaceable parts. */
export function createCertifyHandler(options: CertifyOptions): CertifyHandler {
  const now = options.now ?? (() => new Date());
  const logger = options.logger ?? noopLogger;
  const lifetimeMs = options.lifetimeMs ?? 24 * 60 * 60 * 1000;
  const skewMs = options.skewMs ?? 20_000;
  const maxRequestBytes = options.maxRequestBytes ?? MAX_CERTIFY_REQUEST_BYTES;
  if (!(lifetimeMs > 0) || !(skewMs >= 0)) {
    throw new IdentityError("ERR_CONFIG_INVALID", `lifetimeMs must be > 0 and skewMs >= 0 (got ${lifetimeMs}, ${skewMs})`);
  }
  const policy =
    options.identityPolicy ??
    createIdentityPolicy({
      ...(options.trustDomain === undefined ? {} : { trustDomain: options.trustDomain }),
      ...(options.controlNamespace === undefined ? {} : { controlNamespace: options.controlNamespace }),
    });
  const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
  const total = new Counter({
    name: "identity_certify_total",
    help: "Certify requests, by result (ok or the refusal code).",
    labelNames: ["result"],
    registers,
  });
  const duration = new Histogram({
    name: "identity_certify_duration_seconds",
    help: "Certify latency, by result.",
    labelNames: ["result"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers,
  });

  async function certify(input: CertifyInput, signal: AbortSignal | undefined): Promise<CertifyOutput> {
    // 1. Fields present and within size: nothing is parsed yet.
    const identityBytes = Buffer.byteLength(input.identity ?? "", "utf8");
    const size = identityBytes + (input.token?.byteLength ?? 0) + (input.certificateSigningRequest?.byteLength ?? 0);
    if (size > maxRequestBytes) {
      throw new IdentityError("ERR_REQUEST_TOO_LARGE", `request is ${size} bytes; the limit is ${maxRequestBytes}`);
    }
    if (!input.identity) throw new IdentityError("ERR_IDENTITY_MISSING", "request has no identity; set it to the name to certify");
    if (!input.token || input.token.byteLength === 0) {
      throw new IdentityError("ERR_TOKEN_MISSING", "request has no token; send the ServiceAccount token (audience identity.l5d.io)");
    }
    if (!input.certificateSigningRequest || input.certificateSigningRequest.byteLength === 0) {
      throw new IdentityError("ERR_CSR_MISSING", "request has no certificate_signing_request; send a DER PKCS#10 CSR");
    }
    // 2. The requested name is well-formed and in this trust domain (public naming rules, no secrets).
    const requested = policy.parseRequested(input.identity);
    // 3. An issuer to sign with: no point authenticating a caller that cannot be served.
    const state = options.issuerStore.current();
    if (!state.ok) throw new IdentityError("ERR_ISSUER_UNAVAILABLE", `no issuer to sign with: ${state.reason}`);
    // 4. The caller is authenticated, and 5. authorized for the name, before any CPU goes into its CSR
    // and before the CSR policy is revealed to it.
    const token = await options.tokenValidator.validate(input.token, signal === undefined ? {} : { signal }).catch((error: unknown) => {
      throw IdentityError.from(error, "ERR_TOKEN_UNAVAILABLE");
    });
    const expected = policy.expectedName(token);
    if (expected !== requested.name) {
      throw new IdentityError(
        "ERR_IDENTITY_MISMATCH",
        `token is for ServiceAccount ${token.namespace}/${token.serviceAccount} (identity ${expected}), not for the requested ${requested.name}`,
      );
    }
    // 6. The CSR parses.
    const der = input.certificateSigningRequest;
    if (der[0] !== 0x30) {
      // The wire carries DER; parseCsr would also accept PEM text, which other implementations refuse.
      const pem = Buffer.from(der.subarray(0, 11)).toString("latin1") === "-----BEGIN ";
      throw new IdentityError(
        "ERR_CSR_INVALID",
        pem
          ? "certificate_signing_request is PEM text; send the DER bytes (openssl req -outform DER)"
          : "certificate_signing_request is not a DER PKCS#10 CSR: it does not start with an ASN.1 SEQUENCE",
      );
    }
    let csr: CsrSummary;
    try {
      csr = await parseCsr(der);
    } catch (error) {
      throw new IdentityError(
        "ERR_CSR_INVALID",
        `certificate_signing_request is not a DER PKCS#10 CSR: ${(error as Error).message}`,
        { cause: error },
      );
    }
    // 7. The CSR policy (key, self-signature, SANs, CN).
    checkCsr(csr, { identity: requested.name, spiffeId: requested.spiffeId });
    // 8. Sign.
    // Re-read: the issuer may have rotated while the token was checked.
    const signing = options.issuerStore.current();
    if (!signing.ok) throw new IdentityError("ERR_ISSUER_UNAVAILABLE", `no issuer to sign with: ${signing.reason}`);
    const { issuer } = signing;
    let leaf: Uint8Array;
    let summary: LeafFields;
    try {
      leaf = await issueLeaf({
        issuer: issuer.prepared,
        publicKey: csr.publicKey.spki,
        identity: requested.name,
        spiffeId: requested.spiffeId,
        lifetimeMs,
        skewMs,
        now,
      });
      summary = readLeafFields(leaf);
    } catch (error) {
      throw new IdentityError("ERR_ISSUE_FAILED", `signing the leaf failed: ${(error as Error).message}`, { cause: error });
    }
    return {
      identity: requested.name,
      leaf,
      intermediates: issuer.intermediates,
      validUntil: summary.notAfter,
      serialNumber: summary.serialNumber,
    };
  }

  return async (input, callOptions) => {
    const started = process.hrtime.bigint();
    let result: "ok" | IdentityErrorCode = "ok";
    try {
      const output = await certify(input, callOptions?.signal);
      logger.info(
        { identity: output.identity, serial: output.serialNumber, notAfter: output.validUntil.toISOString(), result },
        "certified",
      );
      return output;
    } catch (error) {
      const failure = IdentityError.from(error, "ERR_ISSUE_FAILED");
      result = failure.code;
      logger.warn({ identity: typeof input.identity === "string" ? input.identity.slice(0, 256) : null, result, reason: failure.message }, "certify refused");
      throw failure;
    } finally {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      total.inc({ result });
      duration.observe({ result }, seconds);
    }
  };
}
