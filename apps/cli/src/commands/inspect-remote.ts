import { createPrivateKey } from "node:crypto";
import tls from "node:tls";
import { certificateMatchesKey, parseCertificate, pemEncode, verifyChain, type CertificateSummary } from "@meshtls/pki";
import { CliError, describeError } from "../errors.ts";
import { describeExpiry } from "../duration.ts";
import { readInputFile } from "../files.ts";
import { readCertificates, readPrivateKey, summarizeCertificate } from "../inputs.ts";
import { splitHostPort } from "../mesh/admin-client.ts";
import type { Output } from "../output.ts";

/** Default bound of the TCP connect + TLS handshake of `inspect HOST:PORT`: 10 s. */
export const DEFAULT_INSPECT_TIMEOUT_MS = 10_000;
/** How long `inspect HOST:PORT --cert --key` watches the connection after the handshake for the server ending it: 500 ms. */
export const DEFAULT_INSPECT_OBSERVE_MS = 500;
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
  /**
   * Client certificate to present (PEM or DER; the leaf first, then any
   * intermediates), e.g. a workload's mesh certificate. Needs `keyFile`.
   * Default: none (a proxy under an authenticated policy then refuses the
   * connection after the handshake).
   */
  certFile?: string;
  /** Private key of `certFile` (PKCS#8 PEM or DER, or EC PEM). Needs `certFile`. */
  keyFile?: string;
  /** Bound of connect + handshake. Default 10 s. */
  timeoutMs?: number;
  /**
   * With a client certificate: how long to keep the connection open after the
   * handshake, watching for the server ending it (a TLS 1.3 server refuses a
   * client certificate only after the client's side of the handshake is
   * done; a proxy closes a connection its policy denies), in milliseconds.
   * Default 500. Without one the connection is closed at once, so that
   * inspecting a proxy does not make it open a connection to its workload.
   */
  observeMs?: number;
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
  /** The key exchange group (`X25519MLKEM768`, `X25519`, `prime256v1`, …), as `getEphemeralKeyInfo()` names it. */
  group: string | null;
  alpn: string | null;
  /** The certificates the server presented, leaf first. */
  chain: PresentedCertificate[];
  /** Whether the leaf names the SNI (DNS SAN or SPIFFE ID), when an SNI was sent. */
  matchesSni?: boolean;
  /** Verification against `--anchors`, when given. */
  verification?: { ok: true; anchor: string } | { ok: false; code: string; reason: string };
  /** The client certificate presented (`--cert`), or null. */
  clientCertificate: { subject: string; identity?: string; spiffeId?: string } | null;
  /** With a client certificate: what the server did in the `observeMs` after the handshake: kept the connection open, or ended it (and how). */
  afterHandshake?: AfterHandshake;
}

/** What a server did with the connection just after the handshake. */
export type AfterHandshake = { open: true; observedMs: number } | { open: false; reason: string };

/**
 * `meshtls inspect HOST:PORT`: a TLS handshake with SNI = the expected
 * identity (presenting a client certificate when `certFile`/`keyFile` are
 * given), then the identity and chain the server presented, in mesh terms:
 * identity name, SPIFFE ID, issuer, expiry, and the anchor it chains to when
 * a trust bundle is given; with a client certificate, also whether the
 * server ended the connection in the `observeMs` after the handshake (how a
 * TLS 1.3 server refuses a client certificate, and a proxy a connection its
 * policy denies). Without one the connection is closed right after the
 * handshake. No application data is sent.
 */
export async function inspectRemote(options: InspectRemoteOptions, output: Output): Promise<InspectRemoteResult> {
  const now = (options.now ?? (() => new Date()))();
  const anchors = options.anchorsFile === undefined ? undefined : await readCertificates(options.anchorsFile, "trust anchors");
  if ((options.certFile === undefined) !== (options.keyFile === undefined)) {
    throw new CliError("ERR_USAGE", "--cert and --key go together: the client certificate and its private key");
  }
  const client = options.certFile === undefined || options.keyFile === undefined ? undefined : await readClientCredential(options.certFile, options.keyFile);
  const handshake = await tlsHandshake({
    address: options.address,
    timeoutMs: options.timeoutMs ?? DEFAULT_INSPECT_TIMEOUT_MS,
    observeMs: client === undefined ? 0 : (options.observeMs ?? DEFAULT_INSPECT_OBSERVE_MS),
    ...(options.sni === undefined ? {} : { sni: options.sni }),
    ...(client === undefined ? {} : { clientCertificate: client.tls }),
  });

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
    group: handshake.group,
    alpn: handshake.alpn,
    chain,
    clientCertificate: client === undefined ? null : client.presented,
  };
  if (handshake.afterHandshake !== undefined) result.afterHandshake = handshake.afterHandshake;
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
  /** The key exchange group (`X25519MLKEM768`, `X25519`, `prime256v1`, …), as `getEphemeralKeyInfo()` names it. */
  group: string | null;
  alpn: string | null;
  /** With `observeMs`: what the server did after the handshake. */
  afterHandshake?: AfterHandshake;
}

/** A client certificate and key as node:tls takes them (PEM). */
export interface ClientCertificate {
  /** The leaf, then any intermediates. */
  cert: string;
  key: string;
}

/** Reads `--cert`/`--key`, refusing a key that is not the certificate's (before connecting anywhere). */
async function readClientCredential(certFile: string, keyFile: string): Promise<{ tls: ClientCertificate; presented: NonNullable<InspectRemoteResult["clientCertificate"]> }> {
  const ders = await readCertificates(certFile, "client certificate");
  const leaf = await summarizeCertificate(ders[0]!, certFile);
  const pair = await readPrivateKey(keyFile, "client key");
  if (!(await certificateMatchesKey(leaf.der, pair.privateKey))) {
    throw new CliError("ERR_INPUT", `${keyFile} is not the private key of ${certFile} (${leaf.subject.text || "empty subject"})`);
  }
  // readPrivateKey accepted the key; node:tls wants it as PEM.
  const data = Buffer.from(await readInputFile(keyFile, "client key"));
  let key: string;
  try {
    const text = data.toString("utf8");
    const keyObject = text.includes("-----BEGIN") ? createPrivateKey(text) : createPrivateKey({ key: data, format: "der", type: "pkcs8" });
    key = keyObject.export({ format: "pem", type: "pkcs8" }).toString();
  } catch (error) {
    throw new CliError("ERR_INPUT", `client key ${keyFile} cannot be used for TLS: ${describeError(error)}`, { cause: error });
  }
  const presented: NonNullable<InspectRemoteResult["clientCertificate"]> = { subject: leaf.subject.text };
  const dns = leaf.san.dns[0];
  const spiffe = leaf.san.uri.find((u) => u.startsWith("spiffe://"));
  if (dns !== undefined) presented.identity = dns;
  if (spiffe !== undefined) presented.spiffeId = spiffe;
  return { tls: { cert: ders.map((der) => pemEncode("CERTIFICATE", der)).join(""), key }, presented };
}

/**
 * A TLS handshake (with `clientCertificate` if given), closed right after or,
 * with `observeMs`, once the server has ended the connection or that long has
 * passed without it doing so: the chain the server presents, and what it did.
 * Throws `CliError` ERR_CONNECT on failure or after `timeoutMs`. `alpn`:
 * protocols to offer (a gRPC server wants `h2`).
 */
export function tlsHandshake(options: {
  address: string;
  sni?: string;
  alpn?: string[];
  timeoutMs: number;
  clientCertificate?: ClientCertificate;
  observeMs?: number;
}): Promise<Handshake> {
  const { host, port } = splitHostPort(options.address);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      ...(options.alpn === undefined ? {} : { ALPNProtocols: options.alpn }),
      // No SNI at all unless asked: Node would otherwise send the host name.
      servername: options.sni ?? "",
      ...(options.clientCertificate === undefined ? {} : { cert: options.clientCertificate.cert, key: options.clientCertificate.key }),
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
    let connected = false;
    socket.once("secureConnect", () => {
      connected = true;
      clearTimeout(timer);
      const chain = peerChain(socket);
      const cipher = socket.getCipher()?.name ?? null;
      const protocol = socket.getProtocol();
      // Node 24 offers OpenSSL 3.5's defaults (X25519MLKEM768 and X25519 key shares), as a meshtls proxy does.
      const keyInfo = socket.getEphemeralKeyInfo() as { name?: unknown } | null;
      const group = typeof keyInfo?.name === "string" ? keyInfo.name : null;
      const alpn = socket.alpnProtocol === false || socket.alpnProtocol === undefined ? null : socket.alpnProtocol;
      if (chain.length === 0) {
        socket.destroy();
        reject(new CliError("ERR_CONNECT", `${options.address} completed a handshake without presenting a certificate`));
        return;
      }
      const handshake: Handshake = { chain, protocol, cipher, group, alpn };
      const observeMs = options.observeMs ?? 0;
      if (observeMs <= 0) {
        socket.destroy();
        resolve(handshake);
        return;
      }
      // A TLS 1.3 server judges the client's certificate after the client's
      // Finished: its alert, or a proxy's policy close, comes after this event.
      let done = false;
      const finish = (after: AfterHandshake): void => {
        if (done) return;
        done = true;
        clearTimeout(watch);
        socket.destroy();
        resolve({ ...handshake, afterHandshake: after });
      };
      const watch = setTimeout(() => finish({ open: true, observedMs: observeMs }), observeMs);
      socket.on("data", () => undefined); // read (and drop) whatever comes, so that an alert or the end is seen
      socket.once("end", () => finish({ open: false, reason: "the server ended the connection" }));
      socket.once("close", () => finish({ open: false, reason: "the connection was closed" }));
      socket.on("error", (error: NodeJS.ErrnoException) => finish({ open: false, reason: describeTlsError(error) }));
    });
    socket.once("error", (error: NodeJS.ErrnoException) => {
      if (connected) return; // after the handshake: reported by the observer above
      const hint =
        options.sni === undefined && (error.code === "ECONNRESET" || /wrong version|packet length|unexpected eof/i.test(error.message))
          ? " (a meshtls proxy terminates TLS only for its own identity: give --sni <identity>)"
          : options.clientCertificate === undefined && /certificate required|handshake failure/i.test(error.message)
            ? " (the server may require a client certificate: give --cert and --key)"
            : "";
      fail(`${options.address}: TLS handshake failed: ${describeTlsError(error)}${hint}`, error);
    });
  });
}

/**
 * A socket error in one line: OpenSSL's `<n>:error:<code>:SSL routines:<function>:<reason>:<file>:<line>:<detail>`
 * becomes its reason (`tlsv13 alert certificate required`), with Node's code.
 */
function describeTlsError(error: NodeJS.ErrnoException): string {
  const parts = error.message.split(":");
  const reason = parts[3] === "SSL routines" && parts[5] !== undefined ? parts[5] : error.message.trim();
  return error.code === undefined ? reason : `${reason} (${error.code})`;
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
    field("TLS", [result.protocol ?? "?", result.cipher ?? "?", result.group ?? "no key exchange group", result.alpn === null ? "no ALPN" : `ALPN ${result.alpn}`].join(", ")),
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
  if (result.clientCertificate === null) {
    lines.push(field("Client cert", "none presented (a server may still refuse the connection after the handshake, as a proxy under all-authenticated does: give --cert and --key)"));
  } else {
    const c = result.clientCertificate;
    lines.push(field("Client cert", `presented ${c.subject || "(empty subject)"}${c.identity === undefined ? "" : `, identity ${c.identity}`}`));
  }
  if (result.afterHandshake?.open === true) {
    lines.push(field("Then", `the server kept the connection open (watched for ${result.afterHandshake.observedMs} ms; no data sent)`));
  } else if (result.afterHandshake?.open === false) {
    lines.push(
      field("Then", `the server ended the connection right after the handshake: ${result.afterHandshake.reason}; it refused this client: check that the certificate chains to the server's trust anchors and that its policy allows this identity`),
    );
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
