import type { ServerPolicy } from "./policy.js";

// The structural interfaces proxy-core reads from. @meshtls/identity's
// credential store and @meshtls/destination's client satisfy them; tests pass
// in-process implementations of the same shapes.

/** The workload's current key and certificate chain (as @meshtls/identity's `Credentials`). */
export interface Credentials {
  identity: string;
  /** PKCS#8 PEM of the private key, memory only. */
  privateKeyPem: string;
  /** PEM of the leaf followed by its intermediates. */
  certificateChainPem: string;
  notAfter: Date;
}

/** Where the current credentials come from; the certifier writes, the proxy reads. */
export interface CredentialSource {
  current(): Credentials | undefined;
  subscribe(listener: (credentials: Credentials) => void): () => void;
}

/** The trust anchors (DER), possibly several, that may change at run time. */
export interface TrustBundleSource {
  current(): Uint8Array[];
  subscribe(listener: (anchors: Uint8Array[]) => void): () => void;
}

/** One endpoint as service discovery describes it. */
export interface Endpoint {
  /** IP literal. */
  address: string;
  port: number;
  weight: number;
  /** DNS-like TLS identity of the endpoint's proxy; absent = unmeshed. */
  identity?: string;
  /** `protocol_hint.opaque_transport.inbound_port`: connect there with the transport header. */
  opaqueTransportPort?: number;
  /**
   * `protocol_hint.protocol`: `h2` — the endpoint's proxy takes HTTP/2 (HTTP/1
   * requests are upgraded with `l5d-orig-proto` and share one multiplexed mesh
   * connection); `opaque` — the port is opaque, never HTTP-detected.
   */
  protocolHint?: "h2" | "opaque";
  labels: Record<string, string>;
}

/** The endpoints of one authority at one moment. */
export interface EndpointSet {
  exists: boolean;
  endpoints: Endpoint[];
}

/** A live discovery of one authority. */
export interface Resolution {
  current(): EndpointSet | undefined;
  ready(options?: { timeoutMs?: number }): Promise<EndpointSet>;
  subscribe(listener: (set: EndpointSet) => void): () => void;
  close(): void;
}

/** Resolves an authority (`svc.ns.svc.cluster.local:80` or `ip:port`) to endpoints. */
export interface EndpointResolver {
  resolve(authority: string, options?: { signal?: AbortSignal }): Resolution;
}

/**
 * Each inbound port's current server policy, which may change at run time
 * (the policy controller's `WatchPort`, or flags fixed at start).
 */
export interface PolicySource {
  /** The port's policy now. A port not asked about before starts from its default (and, for a watching source, its watch). */
  current(port: number): ServerPolicy;
  /** Called with the port and its new policy on every change. */
  subscribe(listener: (port: number, policy: ServerPolicy) => void): () => void;
  /** Keeps the port's policy followed while the returned release is not called (an open connection on it). */
  retain?(port: number): () => void;
  /** Ends any watches. */
  close?(): void;
}
