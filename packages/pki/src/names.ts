import { PkiError } from "./errors.ts";

/** The parts of a DNS-like identity name `<sa>.<ns>.serviceaccount.identity.<controlNs>.<trustDomain>`. */
export interface IdentityNameParts {
  serviceAccount: string;
  namespace: string;
  controlNamespace: string;
  trustDomain: string;
}

/** Default control-plane namespace. */
export const DEFAULT_CONTROL_NAMESPACE = "meshtls";
/** Default trust domain. */
export const DEFAULT_TRUST_DOMAIN = "cluster.local";

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** True when `s` is a DNS-1123 label: 1–63 of `[a-z0-9-]`, starting and ending alphanumeric. */
export function isDnsLabel(s: string): boolean {
  return typeof s === "string" && DNS_LABEL.test(s);
}

/** True when `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated DNS labels. */
export function isDnsSubdomain(s: string): boolean {
  return typeof s === "string" && s.length > 0 && s.length <= 253 && s.split(".").every((l) => DNS_LABEL.test(l));
}

function requireLabel(value: string, what: string): void {
  if (!isDnsLabel(value)) {
    throw new PkiError("ERR_NAME_INVALID", `${what} ${JSON.stringify(value)} is not a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63)`);
  }
}

function requireSubdomain(value: string, what: string): void {
  if (!isDnsSubdomain(value)) {
    throw new PkiError("ERR_NAME_INVALID", `${what} ${JSON.stringify(value)} is not a DNS-1123 subdomain`);
  }
}

/**
 * Builds the DNS-like identity name of a ServiceAccount.
 * Defaults: `controlNamespace` "meshtls", `trustDomain` "cluster.local". Throws ERR_NAME_INVALID.
 */
export function identityName(parts: {
  serviceAccount: string;
  namespace: string;
  controlNamespace?: string;
  trustDomain?: string;
}): string {
  const controlNamespace = parts.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE;
  const trustDomain = parts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  requireLabel(parts.serviceAccount, "service account");
  requireLabel(parts.namespace, "namespace");
  requireLabel(controlNamespace, "control namespace");
  requireSubdomain(trustDomain, "trust domain");
  const name = `${parts.serviceAccount}.${parts.namespace}.serviceaccount.identity.${controlNamespace}.${trustDomain}`;
  if (name.length > 253) throw new PkiError("ERR_NAME_INVALID", `identity name is longer than 253 characters`);
  return name;
}

/**
 * Splits a DNS-like identity name, checking that it lies in `trustDomain` under `controlNamespace`
 * (defaults "cluster.local" and "meshtls"). Throws ERR_NAME_INVALID saying what is wrong.
 */
export function parseIdentityName(
  name: string,
  options: { controlNamespace?: string; trustDomain?: string } = {},
): IdentityNameParts {
  const controlNamespace = options.controlNamespace ?? DEFAULT_CONTROL_NAMESPACE;
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  if (typeof name !== "string" || name.length === 0) throw new PkiError("ERR_NAME_INVALID", "identity name is empty");
  if (name.length > 253) throw new PkiError("ERR_NAME_INVALID", "identity name is longer than 253 characters");
  const suffix = `.serviceaccount.identity.${controlNamespace}.${trustDomain}`;
  if (!name.endsWith(suffix)) {
    throw new PkiError(
      "ERR_NAME_INVALID",
      `identity name ${JSON.stringify(name)} is not of the form <sa>.<ns>${suffix}`,
    );
  }
  const head = name.slice(0, -suffix.length).split(".");
  if (head.length !== 2) {
    throw new PkiError("ERR_NAME_INVALID", `identity name ${JSON.stringify(name)} must have exactly <sa>.<ns> before ${suffix}`);
  }
  const [serviceAccount = "", namespace = ""] = head;
  requireLabel(serviceAccount, "service account");
  requireLabel(namespace, "namespace");
  return { serviceAccount, namespace, controlNamespace, trustDomain };
}

// SPIFFE, following go-spiffe v2 spiffeid (error texts are go-spiffe's, so callers and tests can match them).
const SCHEME = "spiffe://";
const MAX_TRUST_DOMAIN_BYTES = 255;
const MAX_SPIFFE_ID_BYTES = 2048;

function isTrustDomainChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f;
}

function isPathSegmentChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f
  );
}

function spiffeError(message: string): PkiError {
  return new PkiError("ERR_SPIFFE_ID_INVALID", message);
}

/** Validates a SPIFFE ID path ("" or "/seg/seg"), throwing ERR_SPIFFE_ID_INVALID with go-spiffe's message. */
export function validateSpiffePath(path: string): void {
  if (path === "") return;
  if (path[0] !== "/") throw spiffeError("path must have a leading slash");
  let start = 0;
  let end = 0;
  for (; end < path.length; end++) {
    const c = path.charCodeAt(end);
    if (c === 0x2f) {
      const seg = path.slice(start, end);
      if (seg === "/") throw spiffeError("path cannot contain empty segments");
      if (seg === "/." || seg === "/..") throw spiffeError("path cannot contain dot segments");
      start = end;
      continue;
    }
    if (!isPathSegmentChar(c)) {
      throw spiffeError("path segment characters are limited to letters, numbers, dots, dashes, and underscores");
    }
  }
  const seg = path.slice(start, end);
  if (seg === "/") throw spiffeError("path cannot have a trailing slash");
  if (seg === "/." || seg === "/..") throw spiffeError("path cannot contain dot segments");
}

/** Validates one SPIFFE path segment (without slashes), throwing ERR_SPIFFE_ID_INVALID. */
export function validateSpiffePathSegment(segment: string): void {
  if (segment === "") throw spiffeError("path cannot contain empty segments");
  if (segment === "." || segment === "..") throw spiffeError("path cannot contain dot segments");
  for (let i = 0; i < segment.length; i++) {
    if (!isPathSegmentChar(segment.charCodeAt(i))) {
      throw spiffeError("path segment characters are limited to letters, numbers, dots, dashes, and underscores");
    }
  }
}

/**
 * Parses a SPIFFE ID (`spiffe://<trust-domain><path>`), rejecting what go-spiffe rejects and
 * IDs over 2048 bytes or trust domains over 255 (SPIFFE-ID.md 2.3). Throws ERR_SPIFFE_ID_INVALID.
 */
export function parseSpiffeId(uri: string): { trustDomain: string; path: string } {
  if (typeof uri !== "string" || uri === "") throw spiffeError("cannot be empty");
  if (!uri.startsWith(SCHEME)) throw spiffeError("scheme is missing or invalid");
  if (Buffer.byteLength(uri, "utf8") > MAX_SPIFFE_ID_BYTES) throw spiffeError("SPIFFE ID is longer than 2048 bytes");
  const rest = uri.slice(SCHEME.length);
  let i = 0;
  for (; i < rest.length; i++) {
    const c = rest.charCodeAt(i);
    if (c === 0x2f) break;
    if (!isTrustDomainChar(c)) {
      throw spiffeError("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores");
    }
  }
  if (i === 0) throw spiffeError("trust domain is missing");
  if (i > MAX_TRUST_DOMAIN_BYTES) throw spiffeError("trust domain is longer than 255 bytes");
  const trustDomain = rest.slice(0, i);
  const path = rest.slice(i);
  validateSpiffePath(path);
  return { trustDomain, path };
}

/** A trust domain name, or the trust domain of a SPIFFE ID (go-spiffe `TrustDomainFromString`). */
export function parseTrustDomain(input: string): string {
  if (typeof input !== "string" || input === "") throw spiffeError("trust domain is missing");
  if (input.includes(":/")) return parseSpiffeId(input).trustDomain;
  if (input.length > MAX_TRUST_DOMAIN_BYTES) throw spiffeError("trust domain is longer than 255 bytes");
  for (let i = 0; i < input.length; i++) {
    if (!isTrustDomainChar(input.charCodeAt(i))) {
      throw spiffeError("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores");
    }
  }
  return input;
}

/** Builds `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`, validating each part. */
export function spiffeId(parts: { trustDomain: string; namespace: string; serviceAccount: string }): string {
  const trustDomain = parseTrustDomain(parts.trustDomain);
  validateSpiffePathSegment(parts.namespace);
  validateSpiffePathSegment(parts.serviceAccount);
  const id = `${SCHEME}${trustDomain}/ns/${parts.namespace}/sa/${parts.serviceAccount}`;
  parseSpiffeId(id);
  return id;
}

/** The SPIFFE ID for a DNS-like identity name (same trust domain, namespace and service account). */
export function spiffeIdForIdentity(name: string, options: { controlNamespace?: string; trustDomain?: string } = {}): string {
  const parts = parseIdentityName(name, options);
  return spiffeId(parts);
}
