import type { Registry } from "prom-client";
import { Counter } from "prom-client";
import type { AuthorizeDecision, PolicyMeta } from "./policy.js";

/**
 * What a tap event says about a peer's TLS: the state, and the verified
 * identity or the reason there is none. Never a payload or a header value.
 */
export interface TapTls {
  tls: "true" | "opaque" | "no_identity" | "disabled" | "";
  /** `tls: "true"`: the client (inbound) or server (outbound) identity when known. */
  peerId?: string;
  noTlsReason?: string;
  /** `tls: "opaque"`: the SNI the client sent. */
  sni?: string;
}

/** A connection leg opened or closed: who, how secured, how many bytes, for how long (so far). */
export interface TapConnectionEvent extends TapTls {
  type: "connection";
  phase: "open" | "close";
  /** When the event happened (ms since the epoch). */
  timeMs: number;
  direction: "inbound" | "outbound";
  /** `src`: the connection the proxy accepted; `dst`: the one it opened. */
  peer: "src" | "dst";
  /** `host:port` of the other end of this leg, when the socket knew it. */
  peerAddr?: string;
  targetAddr: string;
  bytesRead: number;
  bytesWritten: number;
  durationMs: number;
  /** An inbound connection from a client (`peer: "src"`): the policy decision that let it in or refused it. */
  policy?: TapPolicy;
}

/** A policy decision as tap shows it: allowed or denied, why, by which server and authorization. */
export interface TapPolicy {
  allow: boolean;
  /** `authenticated`, `unauthenticated`, `audit`, or the deny reason. */
  reason: string;
  server: PolicyMeta;
  /** The authorization that allowed it. */
  authz?: PolicyMeta;
}

/** An inbound policy decision, for a connection (`proto: "tcp"`) or a request (`"http"`). */
export interface TapAuthzEvent {
  type: "authz";
  timeMs: number;
  direction: "inbound";
  proto: "tcp" | "http";
  targetAddr: string;
  allow: boolean;
  /** `authenticated`, `unauthenticated`, `audit`, or the deny reason. */
  reason: string;
  server: PolicyMeta;
  /** The authorization that allowed it. */
  authz?: PolicyMeta;
  /** `proto: "tcp"`: the client's `host:port`, as the connection's own events show it. */
  peerAddr?: string;
  /** `proto: "tcp"`: the client's verified mesh identity. */
  peerId?: string;
}

/** An HTTP request answered (or failed). */
export interface TapRequestEvent extends TapTls {
  type: "request";
  timeMs: number;
  direction: "inbound" | "outbound";
  method?: string;
  authority: string;
  /** The path without its query (a query may carry secrets). */
  path?: string;
  targetAddr: string;
  /** Absent when the stream failed before a response head. */
  status?: number;
  grpcStatus?: number;
  error?: string;
  classification: "success" | "failure";
  latencyMs: number;
}

export type TapEvent = TapConnectionEvent | TapAuthzEvent | TapRequestEvent;

/** Where a subscriber's lines go: an HTTP response or any stream with backpressure. */
export interface TapSink {
  /** Returns false when the sink's own buffer is full; `drain` follows. */
  write(chunk: string): boolean;
  once(event: "drain", listener: () => void): unknown;
}

/** One subscriber's handle. */
export interface TapSubscription {
  /** Stops delivery; call it when the sink closes. */
  close(): void;
}

/** Options of {@link createTapHub}. */
export interface CreateTapHubOptions {
  /** Where `tap_events_dropped_total` is registered. */
  registry: Registry;
  /** Subscribers at once; more are refused. Default 8. */
  maxSubscribers?: number;
  /** Events queued per subscriber while its sink is full; more are dropped and counted. Default 1000. */
  maxBufferedEvents?: number;
}

/**
 * The live event stream behind the admin `/tap`. Publishers check
 * `hasSubscribers()` first so that nobody tapping costs nothing; a slow
 * subscriber loses events (counted), it never holds the data path.
 */
export interface TapHub {
  hasSubscribers(): boolean;
  publish(event: TapEvent): void;
  /** Null when `maxSubscribers` are already subscribed. */
  subscribe(sink: TapSink): TapSubscription | null;
}

interface Subscriber {
  sink: TapSink;
  /** Lines waiting for the sink's `drain`; undefined while the sink accepts writes. */
  queue: string[] | undefined;
}

/** Creates the tap hub and its `tap_events_dropped_total` counter. */
export function createTapHub(options: CreateTapHubOptions): TapHub {
  const maxSubscribers = options.maxSubscribers ?? 8;
  const maxBuffered = options.maxBufferedEvents ?? 1000;
  const subscribers = new Set<Subscriber>();
  const dropped = new Counter({ name: "tap_events_dropped_total", help: "Tap events not delivered because a subscriber's buffer was full", registers: [options.registry] });

  const flush = (subscriber: Subscriber): void => {
    const queue = subscriber.queue ?? [];
    subscriber.queue = undefined;
    while (queue.length > 0) {
      if (!subscribers.has(subscriber)) return;
      const ok = subscriber.sink.write(queue.shift()!);
      if (!ok) {
        subscriber.queue = queue;
        subscriber.sink.once("drain", () => flush(subscriber));
        return;
      }
    }
  };

  return {
    hasSubscribers: () => subscribers.size > 0,
    publish(event) {
      if (subscribers.size === 0) return;
      const line = `${JSON.stringify(event)}\n`;
      for (const subscriber of subscribers) {
        if (subscriber.queue !== undefined) {
          if (subscriber.queue.length >= maxBuffered) dropped.inc();
          else subscriber.queue.push(line);
          continue;
        }
        if (!subscriber.sink.write(line)) {
          subscriber.queue = [];
          subscriber.sink.once("drain", () => flush(subscriber));
        }
      }
    },
    subscribe(sink) {
      if (subscribers.size >= maxSubscribers) return null;
      const subscriber: Subscriber = { sink, queue: undefined };
      subscribers.add(subscriber);
      return { close: () => void subscribers.delete(subscriber) };
    },
  };
}

/** The `TapTls` fields of a leg's TLS state. */
export function tapTls(tls: { tls: "true"; peerId?: string } | { tls: "opaque"; sni: string } | { tls: "no_identity"; reason: string } | { tls: "disabled" } | undefined): TapTls {
  if (tls === undefined) return { tls: "" };
  switch (tls.tls) {
    case "true":
      return tls.peerId === undefined ? { tls: "true" } : { tls: "true", peerId: tls.peerId };
    case "opaque":
      return tls.sni === "" ? { tls: "opaque" } : { tls: "opaque", sni: tls.sni };
    case "no_identity":
      return { tls: "no_identity", noTlsReason: tls.reason };
    case "disabled":
      return { tls: "disabled" };
  }
}

/** The `TapPolicy` of a decision. */
export function tapPolicy(decision: AuthorizeDecision): TapPolicy {
  return { allow: decision.allow, reason: decision.reason, server: decision.server, ...(decision.allow ? { authz: decision.authz } : {}) };
}
