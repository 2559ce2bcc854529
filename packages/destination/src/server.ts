import { status, type ServerWritableStream, type ServiceDefinition } from "@grpc/grpc-js";
import {
  DestinationProfile,
  DestinationService,
  ipToTcpAddress,
  refuseMalformedRequests,
  Update,
  WeightedAddr,
  type DestinationServer,
  type GetDestination,
} from "@meshtls/api";
import { identityName, parseCertificate } from "@meshtls/pki";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { parseAuthority, parseContextToken, type Target } from "./authority.js";
import { DestinationError } from "./errors.js";
import { noopLogger, type Logger } from "./logger.js";
import { buildProfile, type ProfileSubject } from "./profile.js";
import { createStreamLimits } from "./stream-limits.js";
import { DEFAULT_WEIGHT, type EndpointRegistry, type RegistryChange, type RegistryEndpoint, type RegistryService, type RegistrySnapshot } from "./registry.js";

/** Who an endpoint belongs to, for its identity (the namespace) and logs. */
type Owner = { namespace: string; name?: string };

export interface DestinationServerOptions {
  /** Where services and endpoints come from. */
  registry: EndpointRegistry;
  /** Trust domain of identity names. Default "cluster.local". */
  trustDomain?: string;
  /** Control-plane namespace of identity names. Default "meshtls". */
  controlNamespace?: string;
  /** Cluster DNS domain of service names. Default "cluster.local". */
  clusterDomain?: string;
  /** Registry to register the server's metrics in (`destination_*`). Default: none. */
  metrics?: Registry;
  /** Most open `Get` streams; more are refused with RESOURCE_EXHAUSTED. Default 100000. */
  maxStreams?: number;
  /**
   * Of `maxStreams`, the most one peer may hold, so that one client cannot lock other proxies out
   * of discovery. A peer is the client's identity (its certificate's first DNS SAN, else its first
   * URI SAN) on an mTLS connection, else its remote IP address. Default 10000.
   */
  maxStreamsPerPeer?: number;
  /**
   * Most bytes of updates waiting for one stream's client to read them; a
   * stream over it is ended with RESOURCE_EXHAUSTED so that a client that does
   * not read cannot grow the server's memory. Default 4 MiB.
   */
  maxPendingBytesPerStream?: number;
  /** Default: no-op. */
  logger?: Logger;
}

/** A destination `Get` server, to add to a grpc-js `Server`. */
export interface DestinationServerHandle {
  /** `server.addService(handle.definition, handle.implementation)`. */
  definition: ServiceDefinition;
  implementation: DestinationServer;
  /** Number of open `Get` and `GetProfile` streams. */
  openStreams(): number;
  /** Number of open `Get` streams of one peer (`id:<identity>` or `ip:<address>`, see `peerOf`). */
  peerStreams(peer: string): number;
  /** Number of distinct targets being watched (streams for one target share one watch). */
  watchedTargets(): number;
  /** Ends every open stream and stops watching the registry. */
  close(): void;
}

/**
 * Lookups over the registry's services, kept up to date service by service
 * when the registry says what changed (a full rebuild otherwise). An IP in
 * several services answers with the first service indexed holding it (in
 * snapshot order after a rebuild); a ClusterIP, with the last.
 */
interface Index {
  services: Map<string, RegistryService>;
  byIp: Map<string, { service: RegistryService; endpoint: RegistryEndpoint }[]>;
  byClusterIp: Map<string, RegistryService[]>;
}

interface TargetState {
  exists: boolean;
  /** Endpoint key ("ip:port") → encoded WeightedAddr (its bytes are also its fingerprint). */
  addrs: Map<string, { addr: WeightedAddr; bytes: string }>;
  labels: Record<string, string>;
  /** An IP target's service, when it resolved through one (its ClusterIP, or an endpoint of it): a change to it recomputes the target. */
  via?: string;
}

type Stream = ServerWritableStream<GetDestination, Update>;
type ProfileStream = ServerWritableStream<GetDestination, DestinationProfile>;

/** The `GetProfile` streams of one target: recomputed once per change that concerns it, written only when it changed. */
interface ProfileWatch {
  target: Target;
  /** The encoded profile last sent: a registry change that leaves it alone sends nothing. */
  bytes: string;
  via?: string;
  streams: Set<ProfileStream>;
}

interface StreamState {
  pendingBytes: number;
  /** Unsubscribes the stream (idempotent). */
  finish(): void;
}

interface Watch {
  target: Target;
  /** The client's node (its context token), for services whose traffic stays on the node. */
  nodeName: string | undefined;
  state: TargetState;
  streams: Map<Stream, StreamState>;
}

// Streams share one encoding of each update: the serializer passes bytes through.
const definition: ServiceDefinition = {
  ...DestinationService,
  get: {
    ...DestinationService.get,
    responseSerialize: (value: Update | Uint8Array): Buffer =>
      value instanceof Uint8Array ? Buffer.from(value.buffer, value.byteOffset, value.byteLength) : Buffer.from(Update.encode(value).finish()),
  },
};

const serviceKey = (service: RegistryService): string => `${service.name}.${service.namespace}`;

function indexService(index: Index, service: RegistryService): void {
  index.services.set(serviceKey(service), service);
  if (service.clusterIP !== undefined) {
    const owners = index.byClusterIp.get(service.clusterIP);
    if (owners === undefined) index.byClusterIp.set(service.clusterIP, [service]);
    else owners.push(service);
  }
  for (const endpoint of service.endpoints) {
    const owners = index.byIp.get(endpoint.address);
    if (owners === undefined) index.byIp.set(endpoint.address, [{ service, endpoint }]);
    // A service's first endpoint with the IP is its own.
    else if (owners.at(-1)!.service !== service) owners.push({ service, endpoint });
  }
}

function unindexService(index: Index, service: RegistryService): void {
  index.services.delete(serviceKey(service));
  if (service.clusterIP !== undefined) {
    const owners = index.byClusterIp.get(service.clusterIP)?.filter((s) => s !== service) ?? [];
    if (owners.length === 0) index.byClusterIp.delete(service.clusterIP);
    else index.byClusterIp.set(service.clusterIP, owners);
  }
  for (const endpoint of service.endpoints) {
    const owners = index.byIp.get(endpoint.address);
    if (owners === undefined) continue;
    const kept = owners.filter((o) => o.service !== service);
    if (kept.length === 0) index.byIp.delete(endpoint.address);
    else if (kept.length !== owners.length) index.byIp.set(endpoint.address, kept);
  }
}

function buildIndex(snapshot: RegistrySnapshot): Index {
  const index: Index = { services: new Map(), byIp: new Map(), byClusterIp: new Map() };
  for (const service of snapshot.services) indexService(index, service);
  return index;
}

/**
 * Brings `index` to `snapshot` by re-indexing only the services `change`
 * names (the registry keeps the others' objects): with thousands of services
 * a change costs its own services, not a walk of every endpoint. Returns
 * false, leaving a rebuild to the caller, when the result does not account
 * for every service of the snapshot.
 */
function updateIndex(index: Index, snapshot: RegistrySnapshot, change: RegistryChange): boolean {
  for (const key of change.services) {
    const previous = index.services.get(key);
    if (previous !== undefined) unindexService(index, previous);
  }
  for (const service of snapshot.services) {
    if (change.services.has(serviceKey(service))) indexService(index, service);
  }
  return index.services.size === snapshot.services.length;
}

function targetKey(target: Target, nodeName?: string): string {
  const node = nodeName === undefined ? "" : ` node ${nodeName}`;
  if (target.kind === "ip") return `ip ${target.ip} ${target.port}${node}`;
  return `svc ${target.instance === undefined ? "" : `${target.instance}.`}${target.name}.${target.namespace} ${target.port}${node}`;
}

/**
 * Creates the `Destination.Get` server over an endpoint registry.
 *
 * Stream contract: the first message is `add` with every endpoint, or
 * `no_endpoints{exists}` when there are none (`exists:false`: unknown
 * service). Then `remove`/`add` as the registry changes (`add` again when an
 * endpoint's metadata changes), and `no_endpoints` when the service appears
 * or disappears. Meshed endpoints carry `tls_identity` (`dns_like_identity`
 * and `server_name` = the identity name of their ServiceAccount) and
 * `protocol_hint.opaque_transport.inbound_port`; unmeshed ones carry no
 * identity. An `<ip>:<port>` lookup answers a service's clusterIP with the
 * service, then the registry's workload at that address (`findWorkload`:
 * pod IPs, then hostIP:hostPort) or, for a registry without one, a service
 * endpoint's IP, with that endpoint alone, and an IP nobody knows with that
 * address without identity (as upstream). `<hostname>.<svc>.<ns>.svc.<domain>`
 * streams only the endpoint of that hostname; a service with
 * `internalTrafficPolicy: "Local"` streams only the endpoints on the node of
 * the client's context token. Malformed paths end the stream with
 * INVALID_ARGUMENT.
 *
 * `GetProfile` answers as Linkerd's destination (see `buildProfile`): a name
 * or ClusterIP gets the service's `fully_qualified_name`, a pod IP (or an
 * unknown IP) its `endpoint` (the `WeightedAddr` that `Get` would send);
 * then a new profile whenever a registry change alters it: streams of one
 * target share one computation, and only targets the change concerns are
 * recomputed. Its streams count against the same stream limits as `Get`'s.
 */
export function createDestinationServer(options: DestinationServerOptions): DestinationServerHandle {
  const logger = options.logger ?? noopLogger;
  const trustDomain = options.trustDomain ?? "cluster.local";
  const controlNamespace = options.controlNamespace ?? "meshtls";
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const maxStreams = options.maxStreams ?? 100_000;
  const maxStreamsPerPeer = options.maxStreamsPerPeer ?? 10_000;
  const limits = createStreamLimits({ maxStreams, maxStreamsPerPeer });
  const maxPendingBytes = options.maxPendingBytesPerStream ?? 4 * 1024 * 1024;
  // Fail at construction, not per stream, on a bad trust domain or control namespace.
  identityName({ serviceAccount: "default", namespace: "default", controlNamespace, trustDomain });
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(clusterDomain)) {
    throw new DestinationError("ERR_AUTHORITY_INVALID", `cluster domain ${JSON.stringify(clusterDomain)} is not a DNS name`);
  }

  let index = buildIndex(options.registry.list());
  const watches = new Map<string, Watch>();
  const profileWatches = new Map<string, ProfileWatch>();
  let closed = false;

  const metrics = options.metrics;
  const requests = metrics
    ? new Counter({ name: "destination_get_requests_total", help: "Get requests by result.", labelNames: ["result"], registers: [metrics] })
    : undefined;
  const refused = metrics
    ? new Counter({
        name: "destination_get_refused_total",
        help: "Get streams refused for lack of room, by reason (max_streams, max_streams_per_peer).",
        labelNames: ["reason"],
        registers: [metrics],
      })
    : undefined;
  const updates = metrics
    ? new Counter({ name: "destination_updates_total", help: "Update messages written to Get streams, by kind.", labelNames: ["kind"], registers: [metrics] })
    : undefined;
  const fanout = metrics
    ? new Histogram({
        name: "destination_registry_change_fanout_seconds",
        help: "Time to compute a registry change and write it to every open stream.",
        buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
        registers: [metrics],
      })
    : undefined;
  if (metrics) {
    new Gauge({ name: "destination_get_streams", help: "Open Get streams.", registers: [metrics], collect() { this.set(limits.open()); } });
    new Gauge({ name: "destination_watched_targets", help: "Distinct targets with open Get streams.", registers: [metrics], collect() { this.set(watches.size); } });
    new Gauge({ name: "destination_registry_services", help: "Services in the registry.", registers: [metrics], collect() { this.set(index.services.size); } });
    new Gauge({ name: "destination_registry_endpoints", help: "Endpoints in the registry.", registers: [metrics], collect() { this.set(index.byIp.size); } });
  }

  function weightedAddr(owner: Owner, endpoint: RegistryEndpoint, ip: string, port: number): WeightedAddr | undefined {
    const metricLabels: Record<string, string> = { ...endpoint.metricLabels, serviceaccount: endpoint.serviceAccount };
    if (endpoint.pod !== undefined) metricLabels.pod = endpoint.pod;
    if (endpoint.zone !== undefined) metricLabels.zone = endpoint.zone;
    // Linkerd labels a meshed pod with its control plane (pkg/k8s/labels.go); a registry without metric labels
    // of its own (the file registry) gets it from the meshed flag.
    if (endpoint.meshed && endpoint.metricLabels === undefined) metricLabels.control_plane_ns = controlNamespace;
    const hints = endpoint.protocolHints;
    const skipped = hints !== undefined && hints.skippedPorts.includes(port);
    const addr: WeightedAddr = {
      addr: ipToTcpAddress(ip, port),
      weight: endpoint.weight,
      metricLabels,
      tlsIdentity: undefined,
      protocolHint: undefined,
      authorityOverride: undefined,
    };
    if (endpoint.meshed && !skipped) {
      let name: string;
      try {
        name = identityName({ serviceAccount: endpoint.serviceAccount, namespace: owner.namespace, controlNamespace, trustDomain });
      } catch (error) {
        // Never hand out a meshed endpoint without its identity: leave it out.
        logger.error({ err: error, service: owner.name, namespace: owner.namespace, address: endpoint.address }, "endpoint has no valid identity name; left out");
        return undefined;
      }
      addr.tlsIdentity = { strategy: { $case: "dnsLikeIdentity", value: { name } }, serverName: { name } };
      addr.protocolHint = { protocol: undefined, opaqueTransport: { inboundPort: endpoint.inboundPort } };
    }
    if (hints !== undefined && !skipped) {
      // Linkerd's hints (endpoint_translator.go): opaque ports get the opaque hint and opaque_transport, others h2.
      const opaque = hints.opaquePorts.includes(port);
      addr.protocolHint = opaque
        ? { protocol: { $case: "opaque", value: {} }, opaqueTransport: { inboundPort: endpoint.inboundPort } }
        : { protocol: { $case: "h2", value: {} }, opaqueTransport: undefined };
    }
    return addr;
  }

  /**
   * A service port's endpoints; with `instance`, only the endpoint of that
   * hostname; for an `internalTrafficPolicy: Local` service, only those on
   * the client's node (none when the client names no node), as Linkerd's
   * filtered listeners.
   */
  function serviceState(service: RegistryService, port: number, filter: { nodeName?: string | undefined; instance?: string | undefined } = {}): TargetState {
    const state: TargetState = { exists: true, addrs: new Map(), labels: { namespace: service.namespace, service: service.name } };
    let targetPort = port;
    let match: RegistryService["ports"][number] | undefined;
    if (service.ports.length > 0) {
      match = service.ports.find((p) => p.port === port);
      if (match === undefined) return state; // The service exists but has nothing on that port.
      targetPort = match.targetPort;
    }
    const local = service.internalTrafficPolicy === "Local";
    for (const endpoint of service.endpoints) {
      if (filter.instance !== undefined && endpoint.hostname !== filter.instance) continue;
      if (local && (endpoint.nodeName === undefined || endpoint.nodeName !== filter.nodeName)) continue;
      // An EndpointSlice's own port for the service port's name (Linkerd's resolveESTargetPort).
      const endpointPort = endpoint.targetPorts === undefined ? targetPort : endpoint.targetPorts[match?.name ?? ""];
      if (endpointPort === undefined) continue;
      const addr = weightedAddr(service, endpoint, endpoint.address, endpointPort);
      if (addr) state.addrs.set(`${endpoint.address} ${endpointPort}`, { addr, bytes: fingerprint(addr) });
    }
    return state;
  }

  /**
   * The endpoint an IP that is no ClusterIP names: the registry's workload
   * lookup when it has one (Linkerd's pod IPs, then hostIP:hostPort), else an
   * endpoint of a service.
   */
  function findByIp(ip: string, port: number): { owner: Owner; endpoint: RegistryEndpoint; service?: RegistryService } | undefined {
    if (options.registry.findWorkload !== undefined) {
      const workload = options.registry.findWorkload(ip, port);
      return workload === undefined ? undefined : { owner: { namespace: workload.namespace }, endpoint: workload.endpoint };
    }
    const found = index.byIp.get(ip)?.[0];
    return found === undefined ? undefined : { owner: found.service, endpoint: found.endpoint, service: found.service };
  }

  function computeState(target: Target, nodeName?: string): TargetState {
    if (target.kind === "service") {
      const service = index.services.get(`${target.name}.${target.namespace}`);
      return service ? serviceState(service, target.port, { nodeName, instance: target.instance }) : { exists: false, addrs: new Map(), labels: {} };
    }
    const service = index.byClusterIp.get(target.ip)?.at(-1);
    if (service) return { ...serviceState(service, target.port, { nodeName }), via: serviceKey(service) };
    return endpointState(target, findByIp(target.ip, target.port));
  }

  /** An IP target that is no ClusterIP: the endpoint found at it, else the address without identity. */
  function endpointState(target: Target & { kind: "ip" }, found: ReturnType<typeof findByIp>): TargetState {
    const state: TargetState = { exists: true, addrs: new Map(), labels: {} };
    if (found) {
      state.labels = found.service === undefined ? { namespace: found.owner.namespace } : { namespace: found.service.namespace, service: found.service.name };
      if (found.service !== undefined) state.via = serviceKey(found.service);
      const addr = weightedAddr(found.owner, found.endpoint, target.ip, target.port);
      // A workload outside a service is labelled with its namespace, as Linkerd's endpoint profiles are.
      if (addr && found.service === undefined) addr.metricLabels.namespace = found.owner.namespace;
      if (addr) state.addrs.set(`${target.ip} ${target.port}`, { addr, bytes: fingerprint(addr) });
    } else {
      const addr: WeightedAddr = {
        addr: ipToTcpAddress(target.ip, target.port),
        weight: DEFAULT_WEIGHT,
        metricLabels: {},
        tlsIdentity: undefined,
        protocolHint: undefined,
        authorityOverride: undefined,
      };
      state.addrs.set(`${target.ip} ${target.port}`, { addr, bytes: fingerprint(addr) });
    }
    return state;
  }

  /**
   * What a `GetProfile` target resolves to (Linkerd's getProfileByName /
   * getProfileByIP, server.go), and the service it went through (see
   * `TargetState.via`). A `<hostname>.<svc>…` name is the endpoint of that
   * hostname at the port asked.
   */
  function profileSubject(target: Target): { subject: ProfileSubject; via?: string } {
    if (target.kind === "service") {
      const service = index.services.get(`${target.name}.${target.namespace}`);
      if (target.instance !== undefined) {
        const endpoint = service?.endpoints.find((e) => e.hostname === target.instance);
        const opaque = endpoint?.protocolHints?.opaquePorts.includes(target.port) ?? false;
        const addr = service === undefined || endpoint === undefined ? undefined : weightedAddr(service, endpoint, endpoint.address, target.port);
        return { subject: addr === undefined ? { kind: "none", opaque } : { kind: "endpoint", endpoint: addr, opaque } };
      }
      return { subject: { kind: "service", name: target.name, namespace: target.namespace, opaque: service !== undefined && serviceOpaque(service, target.port) } };
    }
    const service = index.byClusterIp.get(target.ip)?.at(-1);
    if (service) return { subject: { kind: "service", name: service.name, namespace: service.namespace, opaque: serviceOpaque(service, target.port) }, via: serviceKey(service) };
    // The same WeightedAddr as Get's: an unknown IP gets its address without identity.
    const found = findByIp(target.ip, target.port);
    const state = endpointState(target, found);
    const endpoint = [...state.addrs.values()][0]?.addr;
    const opaque = found?.endpoint.protocolHints?.opaquePorts.includes(target.port) ?? false;
    // Only a meshed endpoint without a valid identity name has none: never hand it out as unmeshed.
    const subject: ProfileSubject = endpoint === undefined ? { kind: "none", opaque } : { kind: "endpoint", endpoint, opaque };
    return state.via === undefined ? { subject } : { subject, via: state.via };
  }

  /** A service port is opaque when its endpoints' hints say so for the port they serve it on. */
  function serviceOpaque(service: RegistryService, port: number): boolean {
    const match = service.ports.find((p) => p.port === port);
    if (service.ports.length > 0 && match === undefined) return false;
    const targetPort = match?.targetPort ?? port;
    return service.endpoints.some((endpoint) => {
      const endpointPort = endpoint.targetPorts === undefined ? targetPort : endpoint.targetPorts[match?.name ?? ""];
      return endpointPort !== undefined && (endpoint.protocolHints?.opaquePorts.includes(endpointPort) ?? false);
    });
  }

  function profileOf(target: Target): { bytes: Uint8Array; via?: string } {
    const { subject, via } = profileSubject(target);
    const bytes = DestinationProfile.encode(buildProfile(subject, { clusterDomain })).finish();
    return via === undefined ? { bytes } : { bytes, via };
  }

  /**
   * Whether a registry change may alter what `target` resolves to: a service
   * target, when its service changed; an IP target, when the service it went
   * through changed, a changed service now holds the IP (as ClusterIP or
   * endpoint), or the registry names the IP as changed.
   */
  function concerns(change: RegistryChange | undefined, target: Target, via: string | undefined): boolean {
    if (change === undefined) return true;
    if (target.kind === "service") return change.services.has(`${target.name}.${target.namespace}`);
    if (via !== undefined && change.services.has(via)) return true;
    if (change.addresses?.has(target.ip) === true) return true;
    if (index.byClusterIp.get(target.ip)?.some((s) => change.services.has(serviceKey(s))) === true) return true;
    // Without a workload lookup, IPs also resolve through services' endpoints.
    return options.registry.findWorkload === undefined && index.byIp.get(target.ip)?.some((o) => change.services.has(serviceKey(o.service))) === true;
  }

  function refreshProfiles(change: RegistryChange | undefined): void {
    for (const watch of profileWatches.values()) {
      if (!concerns(change, watch.target, watch.via)) continue;
      const next = profileOf(watch.target);
      if (next.via === undefined) delete watch.via;
      else watch.via = next.via;
      const key = Buffer.from(next.bytes).toString("base64");
      if (key === watch.bytes) continue;
      watch.bytes = key;
      const message = DestinationProfile.decode(next.bytes);
      for (const stream of watch.streams) stream.write(message);
      updates?.inc({ kind: "profile" }, watch.streams.size);
    }
  }

  function send(streams: Map<Stream, StreamState>, update: Update, kind: string): void {
    const bytes = Update.encode(update).finish();
    const size = bytes.length;
    let written = 0;
    for (const [stream, state] of [...streams]) {
      // One message always goes, however large; more wait only while under the limit.
      if (state.pendingBytes > 0 && state.pendingBytes + size > maxPendingBytes) {
        state.finish();
        logger.warn({ pendingBytes: state.pendingBytes }, "Get stream ended: its client does not read its updates");
        stream.emit("error", { code: status.RESOURCE_EXHAUSTED, details: "the client does not read its updates" });
        continue;
      }
      state.pendingBytes += size;
      // The serializer passes these bytes through (see `definition`).
      stream.write(bytes as unknown as Update, () => {
        state.pendingBytes -= size;
      });
      written++;
    }
    updates?.inc({ kind }, written);
  }

  function addUpdate(state: TargetState, addrs: WeightedAddr[]): Update {
    return { update: { $case: "add", value: { addrs, metricLabels: state.labels } } };
  }

  function initialUpdate(state: TargetState): [Update, string] {
    if (state.addrs.size > 0) return [addUpdate(state, [...state.addrs.values()].map((a) => a.addr)), "add"];
    return [{ update: { $case: "noEndpoints", value: { exists: state.exists } } }, "no_endpoints"];
  }

  function refresh(watch: Watch): void {
    const previous = watch.state;
    const next = computeState(watch.target, watch.nodeName);
    watch.state = next;
    const removed = [...previous.addrs.entries()].filter(([key]) => !next.addrs.has(key)).map(([, a]) => a.addr.addr!);
    const added = [...next.addrs.entries()].filter(([key, a]) => previous.addrs.get(key)?.bytes !== a.bytes).map(([, a]) => a.addr);
    if (removed.length > 0) send(watch.streams, { update: { $case: "remove", value: { addrs: removed } } }, "remove");
    if (added.length > 0) send(watch.streams, addUpdate(next, added), "add");
    if (next.addrs.size === 0 && next.exists !== previous.exists) {
      send(watch.streams, { update: { $case: "noEndpoints", value: { exists: next.exists } } }, "no_endpoints");
    }
  }

  const unwatch = options.registry.watch((snapshot, change) => {
    const started = performance.now();
    try {
      if (change === undefined || !updateIndex(index, snapshot, change)) index = buildIndex(snapshot);
      for (const watch of watches.values()) {
        // A registry that says what changed spares the streams of every other service and address.
        if (concerns(change, watch.target, watch.state.via)) refresh(watch);
      }
      refreshProfiles(change);
    } catch (error) {
      // The registry's own event loop must not stop on a snapshot this server cannot use.
      logger.error({ err: error }, "registry change not applied");
      return;
    }
    const ms = performance.now() - started;
    fanout?.observe(ms / 1000);
    logger.debug({ targets: watches.size, streams: limits.open(), ms }, "registry change sent to open streams");
  });

  const implementation: DestinationServer = {
    get(call: Stream) {
      try {
        get(call);
      } catch (error) {
        // Never out of the handler: grpc-js would answer UNKNOWN, but a listener of ours could not.
        logger.error({ err: error }, "Get failed");
        call.emit("error", { code: status.INTERNAL, details: "the destination server failed to answer this Get" });
      }
    },
    getProfile(call: ProfileStream) {
      try {
        getProfile(call);
      } catch (error) {
        logger.error({ err: error }, "GetProfile failed");
        call.emit("error", { code: status.INTERNAL, details: "the destination server failed to answer this GetProfile" });
      }
    },
  };

  /** Parses a request's path in its context; answers INVALID_ARGUMENT itself and returns undefined when it is malformed. */
  function requestTarget(call: Stream | ProfileStream, rpc: string): { target: Target; context: ReturnType<typeof parseContextToken> } | undefined {
    const request = call.request;
    const context = parseContextToken(request.contextToken);
    try {
      const target = parseAuthority({
        authority: request.path,
        clusterDomain,
        ...(context.namespace === undefined ? {} : { contextNamespace: context.namespace }),
      });
      return { target, context };
    } catch (error) {
      if (!(error instanceof DestinationError)) throw error;
      requests?.inc({ result: "invalid_argument" });
      logger.debug({ path: request.path.slice(0, 300), reason: error.message }, `${rpc} refused`);
      call.emit("error", { code: status.INVALID_ARGUMENT, details: error.message });
      return undefined;
    }
  }

  /** Takes a stream slot for the caller's peer, or answers RESOURCE_EXHAUSTED and returns undefined. */
  function acquireSlot(call: Stream | ProfileStream): { peer: string; release(): void } | undefined {
    const peer = peerOf(call);
    const slot = limits.acquire(peer);
    if (slot.ok) {
      requests?.inc({ result: "ok" });
      return { peer, release: () => slot.release() };
    }
    requests?.inc({ result: "resource_exhausted" });
    refused?.inc({ reason: slot.reason });
    if (slot.reason === "max_streams") {
      call.emit("error", { code: status.RESOURCE_EXHAUSTED, details: `the server holds its maximum of ${maxStreams} streams; retry later` });
    } else {
      logger.warn({ peer, maxStreamsPerPeer }, "stream refused: the peer holds its share of streams");
      call.emit("error", { code: status.RESOURCE_EXHAUSTED, details: `this client (${peer}) holds its maximum of ${maxStreamsPerPeer} streams; close some or retry later` });
    }
    return undefined;
  }

  function getProfile(call: ProfileStream): void {
    if (closed) {
      call.emit("error", { code: status.UNAVAILABLE, details: "the destination server is shutting down" });
      return;
    }
    const parsed = requestTarget(call, "GetProfile");
    if (parsed === undefined) return;
    const slot = acquireSlot(call);
    if (slot === undefined) return;
    const key = targetKey(parsed.target);
    let watch = profileWatches.get(key);
    if (watch === undefined) {
      const first = profileOf(parsed.target);
      watch = { target: parsed.target, bytes: Buffer.from(first.bytes).toString("base64"), streams: new Set(), ...(first.via === undefined ? {} : { via: first.via }) };
      profileWatches.set(key, watch);
    }
    const own = watch;
    own.streams.add(call);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      slot.release();
      own.streams.delete(call);
      if (own.streams.size === 0 && profileWatches.get(key) === own) profileWatches.delete(key);
    };
    call.on("cancelled", finish);
    call.on("close", finish);
    call.on("finish", finish);
    call.on("error", finish);
    call.write(DestinationProfile.decode(Buffer.from(own.bytes, "base64")));
    updates?.inc({ kind: "profile" });
    logger.debug({ target: key, pod: parsed.context.pod, peer: slot.peer }, "GetProfile stream opened");
  }

  function get(call: Stream): void {
    {
      if (closed) {
        call.emit("error", { code: status.UNAVAILABLE, details: "the destination server is shutting down" });
        return;
      }
      const parsed = requestTarget(call, "Get");
      if (parsed === undefined) return;
      const { target, context } = parsed;
      const slot = acquireSlot(call);
      if (slot === undefined) return;
      const peer = slot.peer;
      const key = targetKey(target, context.nodeName);
      let watch = watches.get(key);
      if (watch === undefined) {
        watch = { target, nodeName: context.nodeName, state: computeState(target, context.nodeName), streams: new Map() };
        watches.set(key, watch);
      }
      const own = watch;
      let done = false;
      const state: StreamState = {
        pendingBytes: 0,
        finish() {
          if (done) return;
          done = true;
          slot.release();
          own.streams.delete(call);
          if (own.streams.size === 0 && watches.get(key) === own) watches.delete(key);
        },
      };
      own.streams.set(call, state);
      call.on("cancelled", state.finish);
      call.on("close", state.finish);
      call.on("finish", state.finish);
      call.on("error", state.finish);
      const [first, kind] = initialUpdate(own.state);
      send(new Map([[call, state]]), first, kind);
      logger.debug({ target: key, pod: context.pod, namespace: context.namespace, peer }, "Get stream opened");
    }
  }

  // Bytes that are not a GetDestination are the client's error: INVALID_ARGUMENT, not grpc-js's INTERNAL.
  const served = refuseMalformedRequests(definition, implementation, {
    onMalformed: (path, details) => {
      requests?.inc({ result: "invalid_argument" });
      logger.debug({ path, reason: details }, "malformed request refused");
    },
  });
  return {
    definition: served.definition,
    implementation: served.implementation,
    openStreams: () => limits.open(),
    peerStreams: (peer) => limits.peerStreams(peer),
    watchedTargets: () => watches.size,
    close() {
      if (closed) return;
      closed = true;
      unwatch();
      for (const watch of [...watches.values()]) for (const stream of [...watch.streams.keys()]) stream.end();
      for (const watch of [...profileWatches.values()]) for (const stream of [...watch.streams]) stream.end();
    },
  };
}

function fingerprint(addr: WeightedAddr): string {
  return Buffer.from(WeightedAddr.encode(addr).finish()).toString("base64");
}

/**
 * Who holds a stream, for the per-peer share: `id:<identity>` when the client presented a certificate
 * (mTLS; its first DNS SAN, else its first URI SAN, read from the DER), else `ip:<remote address>`.
 */
export function peerOf(call: { getPeer(): string; getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }): string {
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  if (raw !== undefined && raw.length > 0) {
    try {
      const { san } = parseCertificate(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
      const name = san.dns[0] ?? san.uri[0];
      if (name !== undefined) return `id:${name}`;
    } catch {
      // A certificate TLS accepted but pki cannot read: counted by address.
    }
  }
  const address = call.getPeer();
  const m = /^\[(.*)\]:\d+$/.exec(address) ?? /^(.*):\d+$/.exec(address);
  return `ip:${m?.[1] ?? address}`;
}
