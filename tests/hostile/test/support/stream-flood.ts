// One peer holding many well-formed server streams (WatchPort, GetProfile) on one connection, to test per-peer shares.
import http2 from "node:http2";
import type { SecureClientSessionOptions } from "node:http2";
import { grpcMessage } from "./http2-frames.ts";
import { sleep } from "./processes.ts";

export interface HeldStreams {
  /** Streams that got their first message and are still open, now. */
  held(): number;
  /** Streams ended with a grpc-status so far, by status (e.g. `8` RESOURCE_EXHAUSTED). */
  statuses: Map<number, number>;
  /** Streams neither held nor ended with a status, now (reset, session error, or no answer yet). */
  other(): number;
  /** Ends every stream and the connection. */
  close(): void;
}

/**
 * Opens `count` streams of `path` on one connection to `address` (`host:port`), each sending `request` (one
 * message) and half-closing, as a proxy's WatchPort or GetProfile does, and resolves after `settleMs` (default
 * 3 s). The streams stay open until `close()`.
 */
export async function holdStreams(address: string, path: string, request: Uint8Array, count: number, options: { tls?: SecureClientSessionOptions | undefined; settleMs?: number } = {}): Promise<HeldStreams> {
  const session = http2.connect(`${options.tls === undefined ? "http" : "https"}://${address}`, options.tls ?? {});
  session.on("error", () => undefined);
  const held = new Set<http2.ClientHttp2Stream>();
  const statuses = new Map<number, number>();
  const ended = new Set<http2.ClientHttp2Stream>();
  const body = grpcMessage(Buffer.from(request));
  for (let i = 0; i < count; i++) {
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    const status = (headers: http2.IncomingHttpHeaders): void => {
      if (headers["grpc-status"] === undefined || ended.has(stream)) return;
      ended.add(stream);
      held.delete(stream);
      const code = Number(headers["grpc-status"]);
      statuses.set(code, (statuses.get(code) ?? 0) + 1);
    };
    stream.on("response", status);
    stream.on("trailers", status);
    stream.on("data", () => {
      if (!ended.has(stream)) held.add(stream);
    });
    stream.on("error", () => undefined);
    stream.on("close", () => held.delete(stream));
    stream.end(body);
  }
  await sleep(options.settleMs ?? 3000);
  return {
    held: () => held.size,
    statuses,
    other: () => count - held.size - [...statuses.values()].reduce((a, b) => a + b, 0),
    close: () => session.destroy(),
  };
}

/** `8×200 0×…` for the table. */
export function describeStatuses(statuses: Map<number, number>): string {
  return [...statuses].map(([code, n]) => `grpc-status ${code}×${n}`).join(", ") || "no status";
}

/**
 * Makes one call of `path` per request on one connection (`concurrency` at a time, as a proxy multiplexes its
 * lookups), each cancelled once its first message or its status arrived (5 s at most); counts outcomes as
 * `answered`, `grpc-status N` or `no answer`.
 */
export async function callsOnOneConnection(address: string, path: string, requests: Uint8Array[], options: { tls?: SecureClientSessionOptions | undefined; concurrency?: number } = {}): Promise<Map<string, number>> {
  const session = http2.connect(`${options.tls === undefined ? "http" : "https"}://${address}`, options.tls ?? {});
  session.on("error", () => undefined);
  const seen = new Map<string, number>();
  const count = (key: string): void => void seen.set(key, (seen.get(key) ?? 0) + 1);
  const one = (request: Uint8Array): Promise<void> =>
    new Promise((resolve) => {
      let done = false;
      const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      const finish = (key: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        count(key);
        stream.close(http2.constants.NGHTTP2_CANCEL);
        resolve();
      };
      const timer = setTimeout(() => finish("no answer"), 5000);
      const status = (headers: http2.IncomingHttpHeaders): void => {
        if (headers["grpc-status"] !== undefined) finish(`grpc-status ${String(headers["grpc-status"])}`);
      };
      stream.on("response", status);
      stream.on("trailers", status);
      stream.on("data", () => finish("answered"));
      stream.on("error", () => finish("reset"));
      stream.on("close", () => finish("reset"));
      stream.end(grpcMessage(Buffer.from(request)));
    });
  const concurrency = options.concurrency ?? 50;
  for (let at = 0; at < requests.length; at += concurrency) await Promise.all(requests.slice(at, at + concurrency).map(one));
  session.destroy();
  return seen;
}
