import type net from "node:net";
import { detectTls } from "../detect-tls.js";
import { ProxyError } from "../errors.js";
import type { InboundTarget, Refusal } from "./target.js";
import { refuse } from "./target.js";

/** The detect layer's outcome: plaintext, someone else's TLS (pass-through), or ours (`tls: "true"`, to terminate). */
export type Detected = InboundTarget;

/**
 * How long a client on an opaque port, connected to the inbound listener itself, may stay silent
 * before it is taken for a server-speaks-first protocol, in ms.
 */
export const OPAQUE_CLIENT_FIRST_MS = 50;

/**
 * Reads the client's first bytes and names the TLS state: `no_tls_from_remote`, an
 * `opaque` SNI that is not ours, or mesh TLS for `identity`. A timeout or an
 * oversized hello is a refusal, never a fallback to plaintext.
 *
 * An opaque port (server-speaks-first) is not read when the connection was
 * redirected to it. A connection to the inbound listener itself may be a meshed
 * client's opaque transport (Linkerd's direct port always expects TLS), so it is
 * detected as soon as the client speaks; a client silent for
 * {@link OPAQUE_CLIENT_FIRST_MS} waits for the server: plaintext.
 */
export async function detectLayer(target: InboundTarget, raw: net.Socket, options: { identity: string; detectTimeoutMs: number }): Promise<Detected | Refusal> {
  const plaintext = (): Detected => ({ ...target, tls: { tls: "no_identity", reason: "no_tls_from_remote" } });
  const { protocol } = target.policy;
  let firstBytes: Buffer | undefined;
  if (protocol.kind === "opaque") {
    if (target.origDst !== undefined) return plaintext();
    firstBytes = await firstBytesWithin(raw, OPAQUE_CLIENT_FIRST_MS);
    if (firstBytes === undefined) return plaintext();
  }
  const timeoutMs = protocol.kind === "detect" ? (protocol.timeoutMs ?? options.detectTimeoutMs) : options.detectTimeoutMs;
  try {
    const detection = await detectTls({ socket: raw, timeoutMs, ...(firstBytes === undefined ? {} : { firstBytes }) });
    if (detection.kind === "plaintext") return plaintext();
    if (detection.sni !== options.identity) return { ...target, tls: { tls: "opaque", sni: detection.sni ?? "" } };
    return { ...target, tls: { tls: "true" } };
  } catch (error) {
    const code = error instanceof ProxyError ? error.code : "ERR_DETECT_CLOSED";
    const label = code === "ERR_DETECT_TIMEOUT" ? "tls_detect_timeout" : code === "ERR_DETECT_TOO_LARGE" ? "tls_detect_too_large" : "tls_detect_closed";
    return refuse(code, (error as Error).message, label, error);
  }
}

/**
 * The client's first bytes when it sends within `ms` (detection starts with them: they are not
 * put back and read again), empty when it ends at once, undefined when it stays silent; the
 * socket is left paused.
 */
function firstBytesWithin(socket: net.Socket, ms: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const done = (bytes: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
      resolve(bytes);
    };
    const onData = (chunk: Buffer): void => done(chunk);
    // A client that ends at once is detected as any other: detection reports it.
    const onEnd = (): void => done(Buffer.alloc(0));
    const timer = setTimeout(() => done(undefined), ms);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.resume();
  });
}
