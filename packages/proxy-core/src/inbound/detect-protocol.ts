import type net from "node:net";
import tls from "node:tls";
import { detectHttp } from "../http/detect-http.js";
import type { ConnectWorkload } from "./connect-workload.js";
import type { InboundTarget } from "./target.js";

/** The protocol layer's outcome: HTTP to serve per request, or bytes to forward (with the workload connection already open, when the server spoke first). */
export type DetectedProtocol = { kind: "http1" | "h2" } | { kind: "opaque"; reason: string; upstream?: Promise<net.Socket> } | { kind: "closed" };

/** Options of {@link detectProtocolLayer}. */
export interface DetectProtocolOptions {
  /** The port's policy's detect timeout, else this. */
  detectTimeoutMs: number;
  /**
   * With no client bytes after this long, the workload is connected at once:
   * a server that speaks first ends detection (`server_first`) instead of the
   * timeout. Default 50.
   */
  serverFirstProbeMs?: number;
  connect: ConnectWorkload;
}

/**
 * After policy, before connect: HTTP/1.x, HTTP/2 (prior knowledge, or ALPN
 * `h2` on mesh TLS), else opaque exactly as before. Opaque ports and
 * someone else's TLS skip it. A client that stays silent is opaque once the
 * server spoke first or the detect timeout passed.
 */
export async function detectProtocolLayer(target: InboundTarget, socket: net.Socket, options: DetectProtocolOptions): Promise<DetectedProtocol> {
  const { protocol } = target.policy;
  if (protocol.kind === "opaque") return { kind: "opaque", reason: "opaque_port" };
  if (target.tls.tls === "opaque") return { kind: "opaque", reason: "tls" };
  if (socket instanceof tls.TLSSocket && socket.alpnProtocol === "h2") return { kind: "h2" };
  const timeoutMs = protocol.kind === "detect" ? (protocol.timeoutMs ?? options.detectTimeoutMs) : options.detectTimeoutMs;
  let upstream: Promise<net.Socket> | undefined;
  let probe: NodeJS.Timeout | undefined;
  const serverFirst = new Promise<void>((resolve) => {
    probe = setTimeout(() => {
      upstream = options.connect(target);
      upstream.then(
        (s) => {
          s.pause();
          s.once("readable", () => resolve());
        },
        () => undefined,
      );
    }, options.serverFirstProbeMs ?? 50);
  });
  const detection = await detectHttp({ socket, timeoutMs, serverFirst });
  clearTimeout(probe);
  if (detection.kind === "http1" || detection.kind === "h2" || detection.kind === "closed") {
    upstream?.then((s) => s.destroy(), () => undefined);
    return detection;
  }
  return { kind: "opaque", reason: detection.reason, ...(upstream === undefined ? {} : { upstream }) };
}
