import { ProxyError } from "./errors.js";
import type { Endpoint } from "./sources.js";

/** Options of {@link createBalancer}. */
export interface CreateBalancerOptions {
  /** Uniform random in [0, 1). Default Math.random. */
  random?: () => number;
  /** Milliseconds since some fixed point. Default performance.now. */
  now?: () => number;
  /** The latency estimate an endpoint starts with, from when it is first a candidate. Default 30 (Linkerd's default RTT). */
  defaultRttMs?: number;
  /** How fast an estimate forgets: it decays toward 0 while nothing is measured, and toward each lower sample. Above 0 (`Infinity`: never). Default 10000 (Linkerd's `decay`). */
  decayMs?: number;
  /** The latency a failed connect or request counts as. Default 5000. */
  failurePenaltyMs?: number;
  /** How long an endpoint is set aside after its first failed connect; each further one doubles it. Default 1000. */
  setAsideMs?: number;
  /** The longest an endpoint is set aside. Default 30000. */
  maxSetAsideMs?: number;
}

/** Picks endpoints by load and latency, and tracks what is in flight to them. */
export interface Balancer {
  /**
   * Power of two choices: two distinct random candidates (not in `exclude`,
   * nor set aside unless every one left is), the one with the lower peak-EWMA
   * cost wins: the latency estimate times (in flight + 1), per unit of weight.
   */
  pick(endpoints: readonly Endpoint[], exclude?: ReadonlySet<string>): Endpoint | undefined;
  /** Counts a connection or request in flight to `endpoint`; call the result once it ends. */
  acquire(endpoint: Endpoint): () => void;
  /** Feeds a measured latency (a request's, in ms) into the endpoint's estimate. */
  observe(endpoint: Endpoint, latencyMs: number): void;
  /** Counts a failed connect or request: the estimate jumps to the failure penalty, then decays. */
  fail(endpoint: Endpoint): void;
  /** Connections and requests in flight to `endpoint`. */
  load(endpoint: Endpoint): number;
  /**
   * Sets `endpoint` aside after a failed connect: it is not picked while an
   * endpoint that is not set aside is left, for `setAsideMs`, doubled after
   * each further failure up to `maxSetAsideMs`, until a connect succeeds.
   * Returns how long (ms).
   */
  setAside(endpoint: Endpoint): number;
  /** A connect to `endpoint` succeeded: it is no longer set aside, and its next failure starts the backoff over. */
  connected(endpoint: Endpoint): void;
  /** Whether `endpoint` is set aside now. */
  isSetAside(endpoint: Endpoint): boolean;
}

/** The key an endpoint is tracked under (`ip:port`). */
export function endpointKey(endpoint: Endpoint): string {
  return `${endpoint.address}:${endpoint.port}`;
}

interface Estimate {
  rttMs: number;
  at: number;
}

interface SetAside {
  /** Picked again from then (`now()`). */
  until: number;
  /** The last backoff; the next failure doubles it. */
  backoffMs: number;
}

/** Set-aside records kept before the lapsed ones are dropped (endpoints come and go with discovery). */
const MAX_SET_ASIDE_RECORDS = 1000;
/** Latency estimates kept before the stale ones are dropped (endpoints come and go with discovery). */
const MAX_ESTIMATES = 4096;
/** An estimate untouched for this many decay periods has decayed to nothing (e^-20); dropped, its endpoint starts over at the default if it is seen again. */
const STALE_DECAYS = 20;

/**
 * Creates a power-of-two-choices balancer over Linkerd's peak-EWMA
 * (linkerd/proxy/balance over tower's `PeakEwma`): an endpoint starts at the
 * default RTT when it is first a candidate; a higher latency is taken at
 * once, a lower one blends in with weight `1 - exp(-elapsed / decay)`, and
 * while nothing is measured the estimate decays toward 0 — so a new or
 * penalized endpoint is tried once it looks cheaper than a warm one (within
 * `decay × ln(default / warm cost)`: about 27 s for a 2 ms warm endpoint
 * with Linkerd's defaults), never starved. An endpoint
 * whose connect failed is set aside with a doubling backoff, as Linkerd's
 * balancer holds an endpoint unready while it reconnects; when every
 * endpoint is set aside they are all picked from (availability fails open).
 *
 * @throws ProxyError `ERR_CONFIG_INVALID` for a `decayMs` not above 0 or a negative `defaultRttMs` (every estimate would be NaN or below 0)
 */
export function createBalancer(options: CreateBalancerOptions = {}): Balancer {
  const random = options.random ?? Math.random;
  const now = options.now ?? (() => performance.now());
  const defaultRttMs = options.defaultRttMs ?? 30;
  const decayMs = options.decayMs ?? 10_000;
  const failurePenaltyMs = options.failurePenaltyMs ?? 5000;
  const setAsideMs = options.setAsideMs ?? 1000;
  const maxSetAsideMs = options.maxSetAsideMs ?? 30_000;
  if (!(decayMs > 0)) throw new ProxyError("ERR_CONFIG_INVALID", `the balancer's decayMs must be above 0, not ${decayMs}`);
  if (!(defaultRttMs >= 0)) throw new ProxyError("ERR_CONFIG_INVALID", `the balancer's defaultRttMs must be 0 or more, not ${defaultRttMs}`);
  const asides = new Map<string, SetAside>();
  // Until when any endpoint is set aside: past it, a pick filters nothing (records stay, for the next backoff).
  let anyAsideUntil = 0;
  const isSetAside = (endpoint: Endpoint, at: number): boolean => (asides.get(endpointKey(endpoint))?.until ?? 0) > at;
  // Endpoints not set aside, or all of them when every one is.
  const available = (endpoints: readonly Endpoint[]): readonly Endpoint[] => {
    if (asides.size === 0) return endpoints;
    const at = now();
    if (at >= anyAsideUntil) return endpoints;
    const ready = endpoints.filter((e) => !isSetAside(e, at));
    return ready.length === 0 ? endpoints : ready;
  };
  const open = new Map<string, number>();
  const estimates = new Map<string, Estimate>();
  const load = (endpoint: Endpoint): number => open.get(endpointKey(endpoint)) ?? 0;
  // The estimate of `key` as of `at`, started at the default RTT the first time it is asked for (tower's `PeakEwma::new`).
  const estimateOf = (key: string, at: number): Estimate => {
    const known = estimates.get(key);
    if (known !== undefined) return known;
    if (estimates.size >= MAX_ESTIMATES) {
      for (const [k, e] of estimates) if (at - e.at > STALE_DECAYS * decayMs) estimates.delete(k);
      const oldest = estimates.keys().next().value;
      if (estimates.size >= MAX_ESTIMATES && oldest !== undefined) estimates.delete(oldest);
    }
    const started = { rttMs: defaultRttMs, at };
    estimates.set(key, started);
    return started;
  };
  // Decayed toward 0 since it was last touched (tower's `RttEstimate::decay`: an update with a zero sample). In place: one object per endpoint.
  const decayed = (estimate: Estimate, at: number): number => {
    estimate.rttMs *= Math.exp(-(at - estimate.at) / decayMs);
    estimate.at = at;
    return estimate.rttMs;
  };
  const cost = (endpoint: Endpoint, at: number): number => (decayed(estimateOf(endpointKey(endpoint), at), at) * (load(endpoint) + 1)) / Math.max(endpoint.weight, 1);
  const update = (endpoint: Endpoint, sampleMs: number): void => {
    const at = now();
    const estimate = estimateOf(endpointKey(endpoint), at);
    if (sampleMs > estimate.rttMs) {
      // The peak is taken at once.
      estimate.rttMs = sampleMs;
    } else {
      const weight = Math.exp(-(at - estimate.at) / decayMs);
      estimate.rttMs = estimate.rttMs * weight + sampleMs * (1 - weight);
    }
    estimate.at = at;
  };
  return {
    pick(endpoints, exclude) {
      const candidates = available(exclude === undefined || exclude.size === 0 ? endpoints : endpoints.filter((e) => !exclude.has(endpointKey(e))));
      if (candidates.length === 0) return undefined;
      if (candidates.length === 1) return candidates[0];
      const i = Math.floor(random() * candidates.length);
      let j = Math.floor(random() * (candidates.length - 1));
      if (j >= i) j += 1;
      const a = candidates[i];
      const b = candidates[j];
      if (a === undefined || b === undefined) return a ?? b;
      const at = now();
      return cost(b, at) < cost(a, at) ? b : a;
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
    observe: (endpoint, latencyMs) => update(endpoint, Math.max(latencyMs, 0)),
    fail: (endpoint) => update(endpoint, failurePenaltyMs),
    load,
    setAside(endpoint) {
      const key = endpointKey(endpoint);
      const at = now();
      const previous = asides.get(key);
      // A record lapsed for longer than the longest backoff starts over, as after a success.
      const backoffMs = previous === undefined || at - previous.until > maxSetAsideMs ? setAsideMs : Math.min(previous.backoffMs * 2, maxSetAsideMs);
      if (previous === undefined && asides.size >= MAX_SET_ASIDE_RECORDS) {
        for (const [k, record] of asides) if (at - record.until > maxSetAsideMs) asides.delete(k);
        const oldest = asides.keys().next().value;
        if (asides.size >= MAX_SET_ASIDE_RECORDS && oldest !== undefined) asides.delete(oldest);
      }
      asides.set(key, { until: at + backoffMs, backoffMs });
      anyAsideUntil = Math.max(anyAsideUntil, at + backoffMs);
      return backoffMs;
    },
    connected(endpoint) {
      if (asides.size > 0) asides.delete(endpointKey(endpoint));
    },
    isSetAside: (endpoint) => isSetAside(endpoint, now()),
  };
}
