import { DestinationProfile, type WeightedAddr } from "@meshtls/api";

/**
 * The retry budget of a profile without routes, Linkerd's default (`pkg/profiles` in linkerd2): one retry per
 * five requests, ten a second whatever the ratio, over a 10 s window.
 */
export const DEFAULT_RETRY_BUDGET = { retryRatio: 0.2, minRetriesPerSecond: 10, ttlMs: 10_000 } as const;

/** What a `GetProfile` lookup resolved to. */
export type ProfileSubject =
  /** A service, by name or by its ClusterIP: the proxy then resolves its endpoints with `Get`. */
  | { kind: "service"; name: string; namespace: string; opaque: boolean }
  /** One endpoint (a pod IP, or an IP nobody knows): the proxy connects to it without `Get`. */
  | { kind: "endpoint"; endpoint: WeightedAddr; opaque: boolean }
  /** Nothing the proxy may use (a meshed endpoint whose identity cannot be named). */
  | { kind: "none"; opaque: boolean };

/**
 * The `DestinationProfile` for a lookup, as Linkerd's destination answers it
 * (`controller/api/destination/server.go`, `profile_translator.go`): a
 * service gets its `fully_qualified_name` (`<svc>.<ns>.svc.<clusterDomain>`,
 * no port), an endpoint gets `endpoint`; both get the default retry budget
 * and `opaque_protocol` when the port is opaque. No routes: meshtls has no
 * ServiceProfile resources.
 */
export function buildProfile(subject: ProfileSubject, options: { clusterDomain: string }): DestinationProfile {
  const seconds = Math.floor(DEFAULT_RETRY_BUDGET.ttlMs / 1000);
  return DestinationProfile.fromPartial({
    fullyQualifiedName: subject.kind === "service" ? `${subject.name}.${subject.namespace}.svc.${options.clusterDomain}` : "",
    opaqueProtocol: subject.opaque,
    retryBudget: {
      retryRatio: DEFAULT_RETRY_BUDGET.retryRatio,
      minRetriesPerSecond: DEFAULT_RETRY_BUDGET.minRetriesPerSecond,
      ttl: { seconds: BigInt(seconds), nanos: 0 },
    },
    ...(subject.kind === "endpoint" ? { endpoint: subject.endpoint } : {}),
  });
}
