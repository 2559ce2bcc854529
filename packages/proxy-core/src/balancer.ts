import type { Endpoint } from "./sources.js";

/** Options of {@link createBalancer}. */
export interface CreateBalancerOptions {
  /** Uniform random in [0, 1). Default Math.random. */
  random?: () => number;
}

/** Picks endpoints by load and tracks their open connections. */
export interface Balancer {
  /**
   * Power of two choices: two distinct random candidates (not in `exclude`),
   * the one with fewer open connections per unit of weight wins.
   */
  pick(endpoints: readonly Endpoint[], exclude?: ReadonlySet<string>): Endpoint | undefined;
  /** Counts a connection open to `endpoint`; call the result once it closes. */
  acquire(endpoint: Endpoint): () => void;
  /** Open connections to `endpoint`. */
  load(endpoint: Endpoint): number;
}

/** The key an endpoint is tracked under (`ip:port`). */
export function endpointKey(endpoint: Endpoint): string {
  return `${endpoint.address}:${endpoint.port}`;
}

/** Creates a power-of-two-choices balancer over open connections. */
export function createBalancer(options: CreateBalancerOptions = {}): Balancer {
  const random = options.random ?? Math.random;
  const open = new Map<string, number>();
  const load = (endpoint: Endpoint): number => open.get(endpointKey(endpoint)) ?? 0;
  const cost = (endpoint: Endpoint): number => (load(endpoint) + 1) / Math.max(endpoint.weight, 1);
  return {
    pick(endpoints, exclude) {
      const candidates = exclude === undefined || exclude.size === 0 ? endpoints : endpoints.filter((e) => !exclude.has(endpointKey(e)));
      if (candidates.length === 0) return undefined;
      if (candidates.length === 1) return candidates[0];
      const i = Math.floor(random() * candidates.length);
      let j = Math.floor(random() * (candidates.length - 1));
      if (j >= i) j += 1;
      const a = candidates[i];
      const b = candidates[j];
      if (a === undefined || b === undefined) return a ?? b;
      return cost(b) < cost(a) ? b : a;
    },
    acquire(endpoint) {
      const key = endpointKey(endpoint);
      open.set(key, (open.get(key) ?? 0) + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const next = (open.get(key) ?? 1) - 1;
        if (next <= 0) open.delete(key);
        else open.set(key, next);
      };
    },
    load,
  };
}
