import type { Credentials as IdentityCredentials, TrustAnchorsStore } from "@meshtls/identity";
import type { Resolution as DestinationResolution } from "@meshtls/destination";
import type { ServerPolicy } from "./policy.js";

// What proxy-core reads from, as the owning libraries define it:
// @meshtls/identity's credential and trust-anchors stores and
// @meshtls/destination's client satisfy these; tests pass in-process
// implementations of the same shapes.

export type { Endpoint, EndpointSet } from "@meshtls/destination";

/** The workload's current key and certificate chain: the part of @meshtls/identity's `Credentials` the TLS layers use. */
export type Credentials = Pick<IdentityCredentials, "identity" | "privateKeyPem" | "certificateChainPem" | "notAfter">;

/** Where the current credentials come from (@meshtls/identity's `CredentialStore`); the certifier writes, the proxy reads. */
export interface CredentialSource {
  current(): Credentials | undefined;
  subscribe(listener: (credentials: Credentials) => void): () => void;
}

/** The trust anchors (DER), possibly several, that may change at run time (@meshtls/identity's `TrustAnchorsStore`). */
export type TrustBundleSource = Pick<TrustAnchorsStore, "current" | "subscribe">;

/** A live discovery of one authority: @meshtls/destination's `Resolution`, without its async iteration. */
export type Resolution = Omit<DestinationResolution, typeof Symbol.asyncIterator>;

/** Resolves an authority (`svc.ns.svc.cluster.local:80` or `ip:port`) to endpoints (@meshtls/destination's client). */
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
  /** Declared ports without a first answer from the policy controller yet: the proxy is not ready while any is. */
  unanswered?(): number[];
}
