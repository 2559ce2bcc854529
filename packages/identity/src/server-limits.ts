import { constants as http2Constants } from "node:http2";
import type { ServerHttp2Stream } from "node:http2";
import { Metadata, ServerInterceptingCall, status } from "@grpc/grpc-js";
import type { ServerInterceptingCallInterface, ServerInterceptor, StatusObject } from "@grpc/grpc-js";
import { Counter } from "prom-client";
import type { Registry } from "prom-client";
import { IdentityError } from "./errors.ts";

/** Bounds on what callers of the Certify server may hold; every field is optional. */
export interface CertifyLimits {
  /** Concurrent streams per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). Default 100. */
  maxConcurrentStreams?: number;
  /**
   * A call not answered this long after its headers arrived, in milliseconds, ends with
   * DEADLINE_EXCEEDED and its resources are freed, whatever deadline the caller asked for
   * (a stream that never sends its request included). Default 10000.
   */
  certifyDeadlineMs?: number;
  /** Certify calls in progress at once (including those still waiting for their request); more are refused with RESOURCE_EXHAUSTED. Default 1000. */
  maxCalls?: number;
  /** Of `maxCalls`, the most one peer (remote IP address) may hold. Default 100. */
  maxCallsPerPeer?: number;
  /** A connection without a call for this long, in milliseconds, is closed (GOAWAY). Default 300000 (5 min). */
  maxConnectionIdleMs?: number;
  /** A connection this old, in milliseconds (± 10 %), is sent GOAWAY; the caller reconnects. Default 3600000 (1 h). */
  maxConnectionAgeMs?: number;
  /** After that GOAWAY, time for calls in progress to finish before the connection is closed, in milliseconds. Default 15000. */
  maxConnectionAgeGraceMs?: number;
}

/** The limits used when none are given (see {@link CertifyLimits}). */
export const CERTIFY_LIMITS: Readonly<Required<CertifyLimits>> = Object.freeze({
  maxConcurrentStreams: 100,
  certifyDeadlineMs: 10_000,
  maxCalls: 1000,
  maxCallsPerPeer: 100,
  maxConnectionIdleMs: 300_000,
  maxConnectionAgeMs: 3_600_000,
  maxConnectionAgeGraceMs: 15_000,
});

/** Why a call was ended by a limit (`identity_certify_limited_total{reason}`). */
export type CertifyLimitReason = "deadline" | "max_calls" | "max_calls_per_peer";

/** Validates `limits` (whole numbers ≥ 1) and fills in the defaults. */
export function resolveCertifyLimits(limits: CertifyLimits | undefined): Required<CertifyLimits> {
  const resolved = { ...CERTIFY_LIMITS, ...limits };
  for (const [key, value] of Object.entries(resolved)) {
    if (!Number.isSafeInteger(value) || value < 1) throw new IdentityError("ERR_CONFIG_INVALID", `limits.${key} must be a whole number ≥ 1 (got ${String(value)})`);
  }
  if (resolved.maxCallsPerPeer > resolved.maxCalls) {
    throw new IdentityError("ERR_CONFIG_INVALID", `limits.maxCallsPerPeer (${resolved.maxCallsPerPeer}) must not exceed limits.maxCalls (${resolved.maxCalls})`);
  }
  return resolved;
}

/**
 * A grpc-js server interceptor that enforces the per-call limits: at most `maxCalls` calls at once,
 * `maxCallsPerPeer` of them from one remote address, each ended after `certifyDeadlineMs`. It runs
 * before the handler, as soon as a call's headers arrive, so a call that never sends its request is
 * counted and timed like any other.
 */
export function createCertifyLimitsInterceptor(
  limits: Required<CertifyLimits>,
  metricsRegistry?: Registry,
): { interceptor: ServerInterceptor; calls: () => number } {
  const limited = new Counter({
    name: "identity_certify_limited_total",
    help: "Certify calls refused or ended by a server limit, by reason (deadline, max_calls, max_calls_per_peer).",
    labelNames: ["reason"],
    registers: metricsRegistry ? [metricsRegistry] : [],
  });
  let calls = 0;
  const perPeer = new Map<string, number>();

  const interceptor: ServerInterceptor = (_method, call) => {
    const peer = call.getConnectionInfo().remoteAddress ?? "unknown";
    let held = false;
    let timer: NodeJS.Timeout | undefined;
    const release = () => {
      clearTimeout(timer);
      if (!held) return;
      held = false;
      calls--;
      const left = (perPeer.get(peer) ?? 1) - 1;
      if (left === 0) perPeer.delete(peer);
      else perPeer.set(peer, left);
    };
    // Sent on the call below the interceptor: a status the handler sends later is dropped by grpc-js.
    const end = (reason: CertifyLimitReason, code: status, details: string) => {
      limited.inc({ reason });
      release();
      const trailers = new Metadata();
      trailers.set("meshtls-limit", reason);
      call.sendStatus({ code, details, metadata: trailers } satisfies StatusObject);
      // The status ends the server's side only: a client that never half-closes would keep the HTTP/2
      // stream, its slot of the connection's stream cap, and the connection out of idle, for ever.
      // RST_STREAM(NO_ERROR) after the trailers is what the gRPC HTTP/2 protocol prescribes for this.
      const stream = http2StreamOf(call);
      if (stream) setImmediate(() => { if (!stream.closed) stream.close(http2Constants.NGHTTP2_NO_ERROR); });
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        if (calls >= limits.maxCalls) {
          end("max_calls", status.RESOURCE_EXHAUSTED, `the identity service holds its maximum of ${limits.maxCalls} Certify calls; retry later`);
          return;
        }
        if ((perPeer.get(peer) ?? 0) >= limits.maxCallsPerPeer) {
          end("max_calls_per_peer", status.RESOURCE_EXHAUSTED, `this peer (${peer}) holds its maximum of ${limits.maxCallsPerPeer} Certify calls; retry later`);
          return;
        }
        held = true;
        calls++;
        perPeer.set(peer, (perPeer.get(peer) ?? 0) + 1);
        timer = setTimeout(() => {
          end("deadline", status.DEADLINE_EXCEEDED, `Certify did not complete within the server's limit of ${limits.certifyDeadlineMs} ms`);
        }, limits.certifyDeadlineMs);
        // The call is held by the handler, not by this timer.
        timer.unref();
        next({
          onCancel: release,
        });
      },
      sendStatus(statusObject, next) {
        release();
        next(statusObject);
      },
    });
  };
  return { interceptor, calls: () => calls };
}

/**
 * The HTTP/2 stream under a grpc-js server call. grpc-js does not expose it; its base call keeps it in
 * `stream` (1.10 to 1.14; the limits tests fail if that changes), below any further interceptors' `nextCall`.
 */
function http2StreamOf(call: ServerInterceptingCallInterface): ServerHttp2Stream | undefined {
  let next: unknown = call;
  for (let depth = 0; depth < 16 && typeof next === "object" && next !== null; depth++) {
    const { stream, nextCall } = next as { stream?: unknown; nextCall?: unknown };
    if (typeof stream === "object" && stream !== null && typeof (stream as ServerHttp2Stream).close === "function") return stream as ServerHttp2Stream;
    next = nextCall;
  }
  return undefined;
}
