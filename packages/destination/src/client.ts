import { connectivityState, credentials as grpcCredentials, status, type ChannelCredentials, type ClientReadableStream, type ServiceError } from "@grpc/grpc-js";
import { ApiError, DestinationClient as GrpcDestinationClient, tcpAddressToIp, type DestinationProfile, type Update, type WeightedAddr } from "@meshtls/api";
import { RECONNECT_BACKOFF, reconnectDelayMs } from "./backoff.js";
import { createRedialingChannel, type RedialingChannel } from "./channel.js";
import { DestinationError } from "./errors.js";
import { noopLogger, type Logger } from "./logger.js";

/** One endpoint of a destination, as a proxy uses it. */
export interface Endpoint {
  /** IP literal. */
  address: string;
  port: number;
  weight: number;
  /**
   * The TLS identity the endpoint's proxy must present; absent = unmeshed. A
   * DNS-like identity (`web.shop.serviceaccount.identity.linkerd.cluster.local`)
   * or, for Linkerd's external workloads, a URI (`spiffe://…`), which the
   * peer's certificate must carry as a URI SAN.
   */
  identity?: string;
  /**
   * The SNI to send when it is not `identity` (Linkerd's `server_name`; always
   * set for a URI identity, which cannot be an SNI).
   */
  serverName?: string;
  /** `protocol_hint.opaque_transport.inbound_port`: connect there with the transport header. */
  opaqueTransportPort?: number;
  /** `protocol_hint.protocol`: `h2` (the endpoint's proxy takes HTTP/2) or `opaque` (never HTTP-detected). */
  protocolHint?: "h2" | "opaque";
  /**
   * Linkerd's `authority_override` (a multicluster gateway): the endpoint is
   * a gateway, and the connection must name this authority (`host:port`) in
   * its transport header.
   */
  authorityOverride?: string;
  /** Set-level labels (namespace, service) merged with the endpoint's (pod, serviceaccount). */
  labels: Record<string, string>;
}

/** The endpoints of a destination at one moment. */
export interface EndpointSet {
  /** False when the service is unknown (`no_endpoints{exists:false}`, or Linkerd's NOT_FOUND). */
  exists: boolean;
  endpoints: Endpoint[];
}

/** A live view of one authority's endpoints. */
export interface Resolution extends AsyncIterable<EndpointSet> {
  /** The last known set; kept while the server is unreachable. Undefined before the first answer. */
  current(): EndpointSet | undefined;
  /**
   * The first (or current) set.
   * @param options.timeoutMs Default 10000.
   * @throws DestinationError `ERR_RESOLUTION_TIMEOUT`, `ERR_RESOLUTION_REJECTED`, `ERR_RESOLUTION_CLOSED`
   */
  ready(options?: { timeoutMs?: number }): Promise<EndpointSet>;
  /** Calls `listener` with each new set; returns the unsubscribe function. */
  subscribe(listener: (set: EndpointSet) => void): () => void;
  /** Stops this caller's interest; the shared stream ends with its last caller. */
  close(): void;
}

export interface DestinationClient {
  /**
   * Watches `authority` ("svc.ns.svc.cluster.local:80" or "ip:port"). Callers
   * of the same authority share one stream.
   */
  resolve(authority: string, options?: { signal?: AbortSignal }): Resolution;
  /** Ends every stream and the channel. */
  close(): void;
}

/**
 * When a lost stream is reopened: `initialMs` × `multiplier`^n after the n-th
 * failure in a row, capped at `maxMs`, minus a random 0..`jitter` of itself
 * (so never later than the cap). The count restarts once a stream answers.
 */
export interface BackoffOptions {
  /** In milliseconds. Default 1000. */
  initialMs?: number;
  /** In milliseconds. Default 30000. */
  maxMs?: number;
  /** Default 2. */
  multiplier?: number;
  /** Fraction of each delay taken off at random, 0..1. Default 0.2. */
  jitter?: number;
}

export interface DestinationClientOptions {
  /** `host:port` of the destination service. */
  address: string;
  /** Default: plaintext (`credentials.createInsecure()`). */
  credentials?: ChannelCredentials;
  /** With TLS credentials: the name the server's certificate must carry (e.g. its identity), when not the address's host. */
  serverName?: string;
  /** Sent as `context_token`, e.g. `{"ns":"default","pod":"web-0"}`. Default "". */
  contextToken?: string;
  /** Sent as `scheme`. Default "k8s". */
  scheme?: string;
  backoff?: BackoffOptions;
  /**
   * How long a stream open on a ready channel may stay silent before the
   * authority is taken to have no endpoints, in milliseconds: Linkerd's
   * destination sends no first message for a service without endpoints (its
   * proxy's `LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT`). Default 3000.
   */
  initialTimeoutMs?: number;
  /** Default: no-op. */
  logger?: Logger;
  /** Randomness for backoff jitter, in [0, 1). Default Math.random. */
  random?: () => number;
}

/**
 * Reads one `WeightedAddr` as Linkerd's proxy does (linkerd2-proxy
 * `linkerd/proxy/api-resolve/src/pb.rs`): a DNS-like identity with its
 * `server_name` (the name itself when absent), a URI identity only with a
 * `server_name`; an endpoint whose identity cannot be used is left out,
 * never connected to without TLS. An `inbound_port` of 0 or 65535 is ignored.
 */
function toEndpoint(addr: WeightedAddr, setLabels: Record<string, string>, logger: Logger): Endpoint | undefined {
  if (addr.addr === undefined) return undefined;
  let ip: { ip: string; port: number };
  try {
    ip = tcpAddressToIp(addr.addr);
  } catch (error) {
    if (error instanceof ApiError) return undefined;
    throw error;
  }
  const endpoint: Endpoint = { address: ip.ip, port: ip.port, weight: addr.weight, labels: { ...setLabels, ...addr.metricLabels } };
  const tlsIdentity = addr.tlsIdentity;
  if (tlsIdentity !== undefined) {
    const strategy = tlsIdentity.strategy;
    const serverName = tlsIdentity.serverName?.name ?? "";
    if (strategy?.$case === "dnsLikeIdentity" && strategy.value.name !== "") {
      endpoint.identity = strategy.value.name;
      if (serverName !== "" && serverName !== strategy.value.name) endpoint.serverName = serverName;
    } else if (strategy?.$case === "uriLikeIdentity" && strategy.value.uri !== "" && serverName !== "") {
      endpoint.identity = strategy.value.uri;
      endpoint.serverName = serverName;
    } else {
      logger.warn({ endpoint: `${ip.ip}:${ip.port}`, strategy: strategy?.$case, serverName }, "endpoint left out: its TLS identity is empty, or a URI identity without server_name");
      return undefined;
    }
  }
  const inbound = addr.protocolHint?.opaqueTransport?.inboundPort;
  if (inbound !== undefined && inbound > 0 && inbound < 65535) endpoint.opaqueTransportPort = inbound;
  const protocol = addr.protocolHint?.protocol?.$case;
  if (protocol === "h2" || protocol === "opaque") endpoint.protocolHint = protocol;
  const override = addr.authorityOverride?.authorityOverride ?? "";
  if (override !== "") endpoint.authorityOverride = override;
  return endpoint;
}

const endpointKey = (address: string, port: number): string => `${address} ${port}`;

/** Whether an authority's host is an IP literal (IPv4, or IPv6 in brackets). */
const isIpAuthority = (authority: string): boolean => /^(\d{1,3}\.){3}\d{1,3}:\d+$/.test(authority) || /^\[[0-9a-fA-F:.]+\]:\d+$/.test(authority);

/** The shared state of one authority: one stream, many callers. */
class Watch {
  private readonly listeners = new Set<(set: EndpointSet) => void>();
  private readonly stopListeners = new Set<() => void>();
  private readonly waiters = new Set<{ resolve: (set: EndpointSet) => void; reject: (error: DestinationError) => void }>();
  private endpoints = new Map<string, Endpoint>();
  private exists = false;
  private set: EndpointSet | undefined;
  private call: ClientReadableStream<unknown> | undefined;
  /** The client `call` was opened on. */
  private callClient: GrpcDestinationClient | undefined;
  /**
   * `get`, or `profile` once the server refused `Get` for this `<ip>:<port>`
   * (Linkerd's destination does): the address is then looked up with
   * `GetProfile`, whose service name is followed with `Get` (`inner`).
   */
  private mode: "get" | "profile" = "get";
  private inner: { watch: Watch; off: () => void } | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private initialTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private fresh = false;
  rejected: DestinationError | undefined;
  refs = 0;
  private stopped = false;

  constructor(
    readonly authority: string,
    private readonly channel: RedialingChannel<GrpcDestinationClient>,
    private readonly options: Required<Pick<DestinationClientOptions, "contextToken" | "scheme" | "random" | "initialTimeoutMs">> & {
      backoff: Required<BackoffOptions>;
      logger: Logger;
    },
    private readonly onIdle: () => void,
  ) {
    this.connect();
  }

  current(): EndpointSet | undefined {
    return this.set;
  }

  subscribe(listener: (set: EndpointSet) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  wait(timeoutMs: number): Promise<EndpointSet> {
    if (this.set) return Promise.resolve(this.set);
    if (this.rejected) return Promise.reject(this.rejected);
    if (this.stopped) return Promise.reject(new DestinationError("ERR_RESOLUTION_CLOSED", "the resolution is closed"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (set: EndpointSet) => {
          clearTimeout(timer);
          resolve(set);
        },
        reject: (error: DestinationError) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new DestinationError("ERR_RESOLUTION_TIMEOUT", `no endpoints for ${this.authority} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Calls `listener` once when the watch stops (closed or refused). */
  onStop(listener: () => void): () => void {
    this.stopListeners.add(listener);
    return () => this.stopListeners.delete(listener);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.initialTimer);
    this.call?.cancel();
    this.call = undefined;
    this.dropInner();
    this.failWaiters(this.rejected ?? new DestinationError("ERR_RESOLUTION_CLOSED", "the resolution is closed"));
    this.listeners.clear();
    for (const listener of [...this.stopListeners]) listener();
    this.stopListeners.clear();
  }

  private failWaiters(error: DestinationError): void {
    for (const waiter of [...this.waiters]) waiter.reject(error);
    this.waiters.clear();
  }

  private connect(): void {
    if (this.stopped) return;
    if (this.mode === "profile") {
      this.connectProfile();
      return;
    }
    this.fresh = true;
    const client = this.channel.open();
    this.callClient = client;
    const call = client.get({ scheme: this.options.scheme, path: this.authority, contextToken: this.options.contextToken });
    this.call = call;
    call.on("data", (update: Update) => {
      if (this.call === call) this.apply(update);
    });
    call.on("error", (error: ServiceError) => {
      if (this.call === call) this.retry(error);
    });
    call.on("end", () => {
      if (this.call === call) this.retry(undefined);
    });
    this.armInitialTimer(call);
  }

  /**
   * Linkerd's destination sends nothing first for a service without
   * endpoints: a stream still silent after `initialTimeoutMs` on a ready
   * channel means "no endpoints". A channel still connecting is waited for.
   */
  /** Looks the `<ip>:<port>` up with GetProfile, as Linkerd's proxy does (linkerd2 server.go getProfileByIP). */
  private connectProfile(): void {
    const client = this.channel.open();
    this.callClient = client;
    const call = client.getProfile({ scheme: this.options.scheme, path: this.authority, contextToken: this.options.contextToken });
    this.call = call;
    call.on("data", (profile: DestinationProfile) => {
      if (this.call === call) this.applyProfile(profile);
    });
    call.on("error", (error: ServiceError) => {
      if (this.call === call) this.retry(error);
    });
    call.on("end", () => {
      if (this.call === call) this.retry(undefined);
    });
  }

  /**
   * A profile's `endpoint` is the whole set; its `fully_qualified_name` is
   * resolved with `Get(<name>:<port>)`; neither means an address nobody
   * knows: the address itself, without identity (Linkerd's proxy forwards to
   * the original destination in plaintext).
   */
  private applyProfile(profile: DestinationProfile): void {
    this.attempt = 0;
    const colon = this.authority.lastIndexOf(":");
    const port = Number(this.authority.slice(colon + 1));
    if (profile.endpoint !== undefined) {
      this.dropInner();
      const endpoint = toEndpoint(profile.endpoint, {}, this.options.logger);
      this.publish({ exists: true, endpoints: endpoint === undefined ? [] : [endpoint] });
      return;
    }
    if (profile.fullyQualifiedName !== "") {
      const target = `${profile.fullyQualifiedName}:${port}`;
      if (this.inner?.watch.authority === target) return;
      this.dropInner();
      const watch = new Watch(target, this.channel, this.options, () => undefined);
      watch.refs = 1;
      const offSet = watch.subscribe((set) => this.publish(set));
      const offStop = watch.onStop(() => {
        if (watch.rejected === undefined || this.inner?.watch !== watch) return;
        this.rejected = watch.rejected;
        this.stop();
      });
      this.inner = { watch, off: () => (offSet(), offStop()) };
      return;
    }
    this.dropInner();
    const address = this.authority.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
    this.publish({ exists: true, endpoints: [{ address, port, weight: 10_000, labels: {} }] });
  }

  private dropInner(): void {
    const inner = this.inner;
    this.inner = undefined;
    inner?.off();
    inner?.watch.stop();
  }

  private armInitialTimer(call: ClientReadableStream<Update>): void {
    clearTimeout(this.initialTimer);
    this.initialTimer = setTimeout(() => {
      if (this.call !== call || !this.fresh) return;
      if (this.callClient?.getChannel().getConnectivityState(false) !== connectivityState.READY) {
        this.armInitialTimer(call);
        return;
      }
      this.options.logger.debug({ authority: this.authority, initialTimeoutMs: this.options.initialTimeoutMs }, "no first update: taken as no endpoints");
      this.apply({ update: { $case: "noEndpoints", value: { exists: true } } });
    }, this.options.initialTimeoutMs);
    this.initialTimer.unref?.();
  }

  private retry(error: ServiceError | undefined): void {
    this.call = undefined;
    clearTimeout(this.initialTimer);
    if (this.stopped) return;
    if (error?.code === status.NOT_FOUND) {
      // Linkerd's destination: an unknown service. Callers learn it now; the
      // stream is retried (at the backoff's pace) in case the service appears.
      const attempt = this.attempt;
      this.fresh = true;
      this.apply({ update: { $case: "noEndpoints", value: { exists: false } } });
      this.attempt = attempt;
    }
    if (error?.code === status.INVALID_ARGUMENT && this.mode === "get" && isIpAuthority(this.authority)) {
      // Linkerd's destination refuses IP queries in Get ("IP queries not supported by Get API"): ask GetProfile.
      this.options.logger.debug({ authority: this.authority }, "Get refused an IP lookup; asking GetProfile");
      this.mode = "profile";
      this.connectProfile();
      return;
    }
    if (error && (error.code === status.INVALID_ARGUMENT || error.code === status.UNIMPLEMENTED || error.code === status.PERMISSION_DENIED || error.code === status.UNAUTHENTICATED)) {
      // The server will keep saying no: stop, and tell the callers why.
      this.rejected = new DestinationError("ERR_RESOLUTION_REJECTED", `${this.authority}: ${error.details || status[error.code]}`, { cause: error });
      this.options.logger.warn({ authority: this.authority, code: status[error.code], details: error.details }, "destination lookup refused");
      this.stop();
      return;
    }
    // The next stream goes out on a new connection if this one is failing (see createRedialingChannel).
    const delayMs = reconnectDelayMs({ ...this.options.backoff, attempt: this.attempt, random: this.options.random });
    this.attempt++;
    this.options.logger.debug(
      { authority: this.authority, code: error ? status[error.code] : "END", delayMs, keptEndpoints: this.set?.endpoints.length },
      "destination stream lost; reconnecting, serving the last known set",
    );
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  private apply(message: Update): void {
    if (this.fresh) {
      // A new stream describes the whole state again: replace, do not merge.
      this.fresh = false;
      this.attempt = 0;
      this.endpoints = new Map();
    }
    const update = message.update;
    if (update === undefined) return;
    switch (update.$case) {
      case "add":
        this.exists = true;
        for (const addr of update.value.addrs) {
          const endpoint = toEndpoint(addr, update.value.metricLabels, this.options.logger);
          if (endpoint) this.endpoints.set(endpointKey(endpoint.address, endpoint.port), endpoint);
        }
        break;
      case "remove":
        for (const addr of update.value.addrs) {
          try {
            const { ip, port } = tcpAddressToIp(addr);
            this.endpoints.delete(endpointKey(ip, port));
          } catch (error) {
            if (!(error instanceof ApiError)) throw error;
          }
        }
        break;
      case "noEndpoints":
        this.exists = update.value.exists;
        this.endpoints.clear();
        break;
    }
    this.publish({ exists: this.exists, endpoints: [...this.endpoints.values()] });
  }

  /** Makes `set` the current one and tells the waiters and listeners. */
  private publish(set: EndpointSet): void {
    this.set = set;
    for (const waiter of [...this.waiters]) waiter.resolve(set);
    this.waiters.clear();
    for (const listener of [...this.listeners]) {
      try {
        listener(set);
      } catch (error) {
        this.options.logger.error({ err: error, authority: this.authority }, "endpoint set listener threw");
      }
    }
  }

  release(): void {
    this.refs--;
    if (this.refs === 0) {
      this.stop();
      this.onIdle();
    }
  }
}

/**
 * Creates a caching, reconnecting client of `Destination.Get`. A lost stream
 * is reopened 1 s after, then 2, 4 … up to 30 s apart (each delay minus 0–20 %
 * at random), each time on a connection that can reach the server at once:
 * a failing one is replaced by a new dial, never waited for.
 */
export function createDestinationClient(options: DestinationClientOptions): DestinationClient {
  const logger = options.logger ?? noopLogger;
  const channel = createRedialingChannel(
    () =>
      new GrpcDestinationClient(options.address, options.credentials ?? grpcCredentials.createInsecure(), {
        // Notice a dead server even when no packet says so.
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 5_000,
        // A subchannel of its own: a new client must not inherit a failed one's backoff.
        "grpc.use_local_subchannel_pool": 1,
        ...(options.serverName === undefined
          ? {}
          : { "grpc.ssl_target_name_override": options.serverName, "grpc.default_authority": options.serverName }),
      }),
  );
  const watchOptions = {
    contextToken: options.contextToken ?? "",
    scheme: options.scheme ?? "k8s",
    random: options.random ?? Math.random,
    initialTimeoutMs: options.initialTimeoutMs ?? 3000,
    backoff: { ...RECONNECT_BACKOFF, ...options.backoff },
    logger,
  };
  const watches = new Map<string, Watch>();
  let closed = false;

  return {
    resolve(authority, resolveOptions = {}) {
      let watch = watches.get(authority);
      if (closed) {
        watch = undefined;
      } else if (watch === undefined || watch.rejected) {
        const created: Watch = new Watch(authority, channel, watchOptions, () => {
          if (watches.get(authority) === created) watches.delete(authority);
        });
        watches.set(authority, created);
        watch = created;
      }
      const shared = watch;
      if (shared) shared.refs++;
      let open = shared !== undefined;
      const unsubscribers = new Set<() => void>();
      const iteratorEnds = new Set<() => void>();
      const signal = resolveOptions.signal;
      const onAbort = (): void => resolution.close();

      const resolution: Resolution = {
        current: () => (open ? shared?.current() : undefined),
        ready({ timeoutMs = 10_000 } = {}) {
          if (!open || !shared) return Promise.reject(new DestinationError("ERR_RESOLUTION_CLOSED", "the resolution is closed"));
          return shared.wait(timeoutMs);
        },
        subscribe(listener) {
          if (!open || !shared) return () => {};
          const off = shared.subscribe(listener);
          unsubscribers.add(off);
          return () => {
            off();
            unsubscribers.delete(off);
          };
        },
        close() {
          if (!open) return;
          open = false;
          signal?.removeEventListener("abort", onAbort);
          for (const off of unsubscribers) off();
          unsubscribers.clear();
          for (const end of [...iteratorEnds]) end();
          shared?.release();
        },
        [Symbol.asyncIterator](): AsyncIterator<EndpointSet> {
          // Yields the current set (if any) and every later one; the newest wins when the reader is slow.
          let pending: EndpointSet | undefined = shared?.current();
          let wake: (() => void) | undefined;
          let ended = !open;
          const end = (): void => {
            ended = true;
            wake?.();
          };
          iteratorEnds.add(end);
          const offStop = shared?.onStop(end);
          const off = resolution.subscribe((set) => {
            pending = set;
            wake?.();
          });
          const finish = (): IteratorResult<EndpointSet> => {
            off();
            offStop?.();
            iteratorEnds.delete(end);
            return { done: true, value: undefined };
          };
          return {
            async next(): Promise<IteratorResult<EndpointSet>> {
              for (;;) {
                if (pending !== undefined) {
                  const value = pending;
                  pending = undefined;
                  return { done: false, value };
                }
                if (shared?.rejected) {
                  finish();
                  throw shared.rejected;
                }
                if (ended) return finish();
                await new Promise<void>((resolve) => {
                  wake = resolve;
                });
                wake = undefined;
              }
            },
            async return(): Promise<IteratorResult<EndpointSet>> {
              return finish();
            },
          };
        },
      };
      if (signal?.aborted) resolution.close();
      else signal?.addEventListener("abort", onAbort, { once: true });
      return resolution;
    },
    close() {
      if (closed) return;
      closed = true;
      for (const watch of [...watches.values()]) watch.stop();
      watches.clear();
      channel.close();
    },
  };
}
