import type net from "node:net";
import { detectTls } from "../detect-tls.js";
import { ProxyError } from "../errors.js";
import type { InboundTarget, Refusal } from "./target.js";
import { refuse } from "./target.js";

/** The detect layer's outcome: plaintext, someone else's TLS (pass-through), or ours (`tls: "true"`, to terminate). */
export type Detected = InboundTarget;

/**
 * Reads the client's first bytes (unless the port's protocol is opaque:
 * server-speaks-first) and names the TLS state: `no_tls_from_remote`, an
 * `opaque` SNI that is not ours, or mesh TLS for `identity`. A timeout or an
 * oversized hello is a refusal, never a fallback to plaintext.
 */
export async function detectLayer(target: InboundTarget, raw: net.Socket, options: { identity: string; detectTimeoutMs: number }): Promise<Detected | Refusal> {
  const plaintext: Detected = { ...target, tls: { tls: "no_identity", reason: "no_tls_from_remote" } };
  const { protocol } = target.policy;
  if (protocol.kind === "opaque") return plaintext;
  const timeoutMs = protocol.kind === "detect" ? (protocol.timeoutMs ?? options.detectTimeoutMs) : options.detectTimeoutMs;
  try {
    const detection = await detectTls({ socket: raw, timeoutMs });
    if (detection.kind === "plaintext") return plaintext;
    if (detection.sni !== options.identity) return { ...target, tls: { tls: "opaque", sni: detection.sni ?? "" } };
    return { ...target, tls: { tls: "true" } };
  } catch (error) {
    const code = error instanceof ProxyError ? error.code : "ERR_DETECT_CLOSED";
    const label = code === "ERR_DETECT_TIMEOUT" ? "tls_detect_timeout" : code === "ERR_DETECT_TOO_LARGE" ? "tls_detect_too_large" : "tls_detect_closed";
    return refuse(code, (error as Error).message, label, error);
  }
}
