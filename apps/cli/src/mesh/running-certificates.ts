import { decodeCertificates, parseCertificate, verifyChain, type CertificateSummary } from "@meshtls/pki";
import { tlsHandshake } from "../commands/inspect-remote.ts";
import { CliError, describeError } from "../errors.ts";
import { requestAdmin } from "./admin-client.ts";

/** Bound of each request to a running part: 5 s. */
export const RUNNING_LOOKUP_TIMEOUT_MS = 5_000;

/** How a proxy without `GET /identity` is described; `isNoIdentityEndpoint` recognises it. */
const NO_IDENTITY_ENDPOINT = "has no /identity endpoint (a meshtls-proxy older than this CLI?): cannot read the certificate it holds";

/** Whether an error says that a proxy has no `/identity` endpoint (an older proxy, not a broken one). */
export function isNoIdentityEndpoint(error: unknown): boolean {
  return error instanceof CliError && error.message.endsWith(NO_IDENTITY_ENDPOINT);
}

/** What a proxy's `GET /identity` answers (meshtls-proxy admin). */
export interface ProxyIdentity {
  identity: string;
  /** notAfter of the certificate in use; null before the first one. */
  notAfter: string | null;
  /** The certificate in use, leaf first (PEM); null before the first one. */
  certificateChainPem: string | null;
  /** The trust bundle the proxy verifies peers with (PEM). */
  trustAnchorsPem: string;
}

/** A certificate that a running part of the mesh presents right now. */
export interface RunningCertificate {
  /** `proxy 127.0.0.1:4191` or `identity service 127.0.0.1:8080`. */
  source: string;
  /** DER, leaf first, as the part presents it. */
  chain: Uint8Array[];
  /** The trust bundle the part uses (proxies only), DER. */
  trustAnchors?: Uint8Array[];
}

/** Where certificates are running: proxies' admin addresses and an identity service's gRPC address. */
export interface RunningParts {
  proxyAdmins?: string[];
  identityAddress?: string;
}

/**
 * GETs a proxy's `/identity`. Throws `CliError` ERR_CONNECT when the proxy
 * cannot be reached, has no such endpoint (an older proxy), holds no
 * certificate yet (503), or answers something that is not that JSON.
 */
export async function fetchProxyIdentity(options: { address: string; timeoutMs?: number }): Promise<ProxyIdentity> {
  const { address } = options;
  const res = await requestAdmin({ address, path: "/identity", method: "GET", accept: "application/json", timeoutMs: options.timeoutMs ?? RUNNING_LOOKUP_TIMEOUT_MS });
  if (res.status === 404) {
    throw new CliError("ERR_CONNECT", `proxy ${address} ${NO_IDENTITY_ENDPOINT}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(res.body);
  } catch {
    throw new CliError("ERR_CONNECT", `proxy ${address}/identity answered HTTP ${res.status} without JSON`);
  }
  const b = body as Partial<ProxyIdentity> & { error?: unknown };
  if (res.status !== 200) {
    throw new CliError("ERR_CONNECT", `proxy ${address} holds no certificate: ${typeof b.error === "string" ? b.error : `HTTP ${res.status}`}`);
  }
  if (typeof b.identity !== "string" || typeof b.trustAnchorsPem !== "string" || !(typeof b.certificateChainPem === "string" || b.certificateChainPem === null)) {
    throw new CliError("ERR_CONNECT", `proxy ${address}/identity answered JSON without identity, certificateChainPem and trustAnchorsPem`);
  }
  return { identity: b.identity, notAfter: typeof b.notAfter === "string" ? b.notAfter : null, certificateChainPem: b.certificateChainPem, trustAnchorsPem: b.trustAnchorsPem };
}

/** The certificate a proxy holds and the anchors it trusts, from `/identity`. */
export async function runningProxyCertificate(options: { address: string; timeoutMs?: number }): Promise<RunningCertificate> {
  const source = `proxy ${options.address}`;
  const found = await fetchProxyIdentity(options);
  if (found.certificateChainPem === null) {
    throw new CliError("ERR_CONNECT", `${source} holds no certificate yet`);
  }
  return { source, chain: decode(found.certificateChainPem, `${source} certificate`), trustAnchors: decode(found.trustAnchorsPem, `${source} trust anchors`) };
}

/** The chain an identity service presents on its gRPC port (TLS, ALPN h2). */
export async function runningIdentityCertificate(options: { address: string; timeoutMs?: number }): Promise<RunningCertificate> {
  const handshake = await tlsHandshake({ address: options.address, alpn: ["h2"], timeoutMs: options.timeoutMs ?? RUNNING_LOOKUP_TIMEOUT_MS });
  return { source: `identity service ${options.address}`, chain: handshake.chain };
}

/** One running part looked up: its certificate, or why it could not be read. */
export type RunningLookup = { ok: true; certificate: RunningCertificate } | { ok: false; source: string; reason: string };

/** Looks up every given part; a part that cannot be read is a `{ ok: false }` entry, never a throw. */
export async function lookUpRunning(parts: RunningParts): Promise<RunningLookup[]> {
  const lookups: Promise<RunningLookup>[] = (parts.proxyAdmins ?? []).map((address) =>
    settle(`proxy ${address}`, () => runningProxyCertificate({ address })),
  );
  if (parts.identityAddress !== undefined) {
    const address = parts.identityAddress;
    lookups.push(settle(`identity service ${address}`, () => runningIdentityCertificate({ address })));
  }
  return Promise.all(lookups);
}

async function settle(source: string, lookUp: () => Promise<RunningCertificate>): Promise<RunningLookup> {
  try {
    return { ok: true, certificate: await lookUp() };
  } catch (error) {
    return { ok: false, source, reason: describeError(error).replace(new RegExp(`^${escape(source)}:? `), "") };
  }
}

/** How a running certificate fares under a set of anchors. */
export type RunningVerification =
  | { ok: true; identity: string; issuer: CertificateSummary; anchor: CertificateSummary }
  | { ok: false; identity: string; code: string; reason: string };

/**
 * Verifies a running certificate under `anchors` now, as its peers would
 * (pki verifyChain, mesh leaf rules; the identity service's certificate for
 * serverAuth, as proxies check it). On success, names the issuer and the anchor it chains to.
 */
export async function verifyRunning(certificate: RunningCertificate, anchors: Uint8Array[], now: Date): Promise<RunningVerification> {
  const leaf = await parseCertificate(certificate.chain[0]!);
  const identity = leaf.san.dns[0] ?? leaf.subject.text;
  const result = await verifyChain({
    leaf: leaf.der,
    intermediates: certificate.chain.slice(1),
    anchors,
    now,
    ...(certificate.source.startsWith("identity service") ? { purpose: "serverAuth" as const } : {}),
  });
  if (!result.ok) return { ok: false, identity, code: result.code, reason: result.reason };
  const anchor = result.chain[result.chain.length - 1]!;
  return { ok: true, identity, issuer: result.chain[1] ?? anchor, anchor };
}

/** A CA in one short phrase: its subject and the start of its SHA-256 fingerprint. */
export function nameCa(summary: CertificateSummary): string {
  return `${summary.subject.text} (sha256:${summary.fingerprintSha256.slice(0, 12)})`;
}

function decode(pem: string, what: string): Uint8Array[] {
  try {
    const ders = decodeCertificates(new TextEncoder().encode(pem));
    if (ders.length === 0) throw new Error("no certificate");
    return ders;
  } catch (error) {
    throw new CliError("ERR_CONNECT", `${what}: ${describeError(error)}`, { cause: error });
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
