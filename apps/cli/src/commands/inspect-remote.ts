import tls from "node:tls";
import { parseCertificate, verifyChain, type CertificateSummary } from "@meshtls/pki";
import { CliError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { readCertificates } from "../inputs.ts";
import { splitHostPort } from "../mesh/admin-client.ts";
import type { Output } from "../output.ts";

/** Default bound of the TCP connect + TLS handshake of `inspect HOST:PORT`: 10 s. */
export const DEFAULT_INSPECT_TIMEOUT_MS = 10_000;
/** Most certificates read from a peer's chain (10); a mesh chain has two. */
const MAX_PEER_CHAIN = 10;

export interface InspectRemoteOptions {
  /** `host:port` of a proxy's inbound port (or any TLS server). */
  address: string;
  /** SNI to send: the identity the server should present. Default: none (a proxy then passes the connection to its workload). */
  sni?: string;
  /** Trust bundle to verify the presented chain against. Default: not verified. */
  anchorsFile?: string;
  json?: boolean;
  /** Bound of connect + handshake. Default 10 s. */
  timeoutMs?: number;
  now?: () => Date;
}

/** One certificate of the presented chain, in mesh terms. */
export interface PresentedCertificate {
  subject: string;
  issuer: string;
  /** The first DNS SAN: the mesh identity name (for a workload leaf). */
  identity?: string;
  /** The first spiffe:// URI SAN. */
  spiffeId?: string;
  ca: boolean;
  notBefore: string;
  notAfter: string;
  expiresInSeconds: number;
  fingerprintSha256: string;
}

export interface InspectRemoteResult {
  kind: "remote";
  address: string;
  sni: string | null;
  protocol: string | null;
  cipher: string | null;
  alpn: string | null;
  /** The certificates the server presented, leaf first. */
  chain: PresentedCertificate[];
  /** Whether the leaf names the SNI (DNS SAN or SPIFFE ID), when an SNI was sent. */
  matchesSni?: boolean;
  /** Verification against `--anchors`, when given. */
  verification?: { ok: true; anchor: string } | { ok: false; code: string; reason: string };
}

/**
 * `meshtls inspect HOST:PORT`: a TLS handshake (no client certificate) with
 * SNI = the expected identity, then the identity and chain the server
 * presented, in mesh terms: identity name, SPIFFE ID, issuer, expiry, and
 * the anchor it chains to when a trust bundle is given. The connection is
 * closed right after the handshake: no application data is sent.
 */
export async function inspectRemote(options: InspectRemoteOptions, output: Output): Promise<InspectRemoteResult> {
  const now = (options.now ?? (() => new Date()))();
  const anchors = options.anchorsFile === undefined ? undefined : await readCertificates(options.anchorsFile, "trust anchors");
  const handshake = await tlsHandshake({ address: options.address, timeoutMs: options.timeoutMs ?? DEFAULT_INSPECT_TIMEOUT_MS, ...(options.sni === undefined ? {} : { sni: options.sni }) });

  const summaries: CertificateSummary[] = [];
  for (const [index, der] of handshake.chain.entries()) {
    try {
      summaries.push(await parseCertificate(der));
    } catch (error) {
      throw new CliError("ERR_INPUT", `${options.address} presented an unparsable certificate (${index + 1} of the chain): ${(error as Error).message}`, { cause: error });
    }
  }
  const chain = summaries.map((s) => present(s, now));
  const result: InspectRemoteResult = {
    kind: "remote",
    address: options.address,
    sni: options.sni ?? null,
    protocol: handshake.protocol,
    cipher: handshake.cipher,
    alpn: handshake.alpn,
    chain,
  };
  const leaf = summaries[0]!;
  if (options.sni !== undefined) {
    const sni = options.sni.toLowerCase();
    result.matchesSni = leaf.san.dns.some((d) => d.toLowerCase() === sni) || leaf.san.uri.includes(options.sni);
  }
  if (anchors !== undefined) {
    const verified = await verifyChain({
      leaf: leaf.der,
      // The server's own copy of an anchor, if it sent one, is not trusted: only the bundle is.
      intermediates: summaries.slice(1).map((s) => s.der),
      anchors,
      now,
      purpose: "serverAuth",
      ...(options.sni === undefined ? {} : { expectedName: { dns: options.sni } }),
    });
    result.verification = verified.ok
      ? { ok: true, anchor: verified.chain[verified.chain.length - 1]!.subject.text }
      : { ok: false, code: verified.code, reason: verified.reason };
  }

  if (options.json === true) {
    output.out(JSON.stringify(result, null, 2));
  } else {
    output.out(describe(result, options.anchorsFile));
  }
  return result;
}

/** What a server presented in a TLS handshake. */
export interface Handshake {
  /** DER certificates, leaf first, as sent. */
  chain: Uint8Array[];
  protocol: string | null;
  cipher: string | null;
  alpn: string | null;
}

/**
 * A TLS handshake without a client certificate, closed right after: the chain
 * the server presents. Throws `CliError` ERR_CONNECT on failure or after
 * `timeoutMs`. `alpn`: protocols to offer (a gRPC server wants `h2`).
 */
export function tlsHandshake(options: { address: string; sni?: string; alpn?: string[]; timeoutMs: number }): Promise<Handshake> {
  const { host, port } = splitHostPort(options.address);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
      // No SNI at all unless asked: Node would otherwise send the host name.
      servername: options.sni ?? "",
      // The chain is verified below against the mesh bundle and identity, not the system roots or the host name.
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
    const fail = (message: string, cause?: unknown): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new CliError("ERR_CONNECT", message, { cause }));
    };
    const timer = setTimeout(() => fail(`${options.address}: no TLS handshake within ${Math.round(options.timeoutMs / 1000)} s${options.sni === undefined ? " (a meshtls proxy terminates TLS only for its own identity: give --sni <identity>)" : ""}`), options.timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const chain = peerChain(socket);
      const cipher = socket.getCipher()?.name ?? null;
      const protocol = socket.getProtocol();
      const alpn = socket.alpnProtocol === false || socket.alpnProtocol === undefined ? null : socket.alpnProtocol;
      socket.destroy();
      if (chain.length === 0) {
        reject(new CliError("ERR_CONNECT", `${options.address} completed a handshake without presenting a certificate`));
        return;
      }
      resolve({ chain, protocol, cipher, alpn });
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      const hint =
        options.sni === undefined && (error.code === "ECONNRESET" || /wrong version|packet length|unexpected eof/i.test(error.message))
          ? " (a meshtls proxy terminates TLS only for its own identity: give --sni <identity>)"
          : "";
      fail(`${options.address}: TLS handshake failed: ${error.code ?? ""}${error.code === undefined ? "" : " "}${error.message}${hint}`, error);
    });
  });
}

/** The certificates the peer sent, leaf first (Node links them through issuerCertificate). */
function peerChain(socket: tls.TLSSocket): Uint8Array[] {
  const out: Uint8Array[] = [];
  let cert: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (cert?.raw !== undefined && out.length < MAX_PEER_CHAIN) {
    const key = cert.fingerprint256;
    if (seen.has(key)) break;
    seen.add(key);
    out.push(new Uint8Array(cert.raw));
    cert = cert.issuerCertificate;
  }
  return out;
}

function present(s: CertificateSummary, now: Date): PresentedCertificate {
  const p: PresentedCertificate = {
    subject: s.subject.text,
    issuer: s.issuer.text,
    ca: s.ca,
    notBefore: s.notBefore.toISOString(),
    notAfter: s.notAfter.toISOString(),
    expiresInSeconds: Math.floor((s.notAfter.getTime() - now.getTime()) / 1000),
    fingerprintSha256: s.fingerprintSha256,
  };
  const dns = s.san.dns[0];
  const spiffe = s.san.uri.find((u) => u.startsWith("spiffe://"));
  if (dns !== undefined) p.identity = dns;
  if (spiffe !== undefined) p.spiffeId = spiffe;
  return p;
}

function field(label: string, value: string): string {
  return `  ${`${label}:`.padEnd(14)}${value}`;
}

function describe(result: InspectRemoteResult, anchorsFile: string | undefined): string {
  const leaf = result.chain[0]!;
  const now = new Date();
  const expiry = (c: PresentedCertificate): string => `${c.notAfter} (${describeExpiry(new Date(c.notAfter), new Date(now.getTime()))})`;
  const lines = [
    `${result.address}${result.sni === null ? " (no SNI)" : ` (SNI ${result.sni})`}`,
    field("TLS", [result.protocol ?? "?", result.cipher ?? "?", result.alpn === null ? "no ALPN" : `ALPN ${result.alpn}`].join(", ")),
    field("Identity", leaf.identity ?? "(no DNS SAN: not a mesh identity)"),
    field("SPIFFE ID", leaf.spiffeId ?? "(none)"),
  ];
  if (result.matchesSni !== undefined) {
    lines.push(field("Matches SNI", result.matchesSni ? "yes" : "NO: the certificate does not name the SNI identity"));
  }
  lines.push(field("Issuer", leaf.issuer || "(empty)"));
  lines.push(field("Expires", expiry(leaf)));
  lines.push(field("Chain", `${result.chain.length} certificate${result.chain.length === 1 ? "" : "s"} presented`));
  for (const [index, cert] of result.chain.entries()) {
    lines.push(`    ${index + 1}. ${cert.subject || "(empty subject)"}${cert.ca ? " [CA]" : ""}, issued by ${cert.issuer || "(empty)"}, ${describeExpiry(new Date(cert.notAfter), now)}`);
  }
  if (result.verification === undefined) {
    lines.push(field("Trust", "not verified (give --anchors FILE)"));
  } else if (result.verification.ok) {
    lines.push(field("Trust", `chains to trust anchor ${result.verification.anchor} (${anchorsFile ?? "anchors"})`));
  } else {
    lines.push(field("Trust", `does NOT verify against ${anchorsFile ?? "the anchors"}: ${result.verification.reason} (${result.verification.code})`));
  }
  return lines.join("\n");
}
