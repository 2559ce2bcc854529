import type { ServerPolicy } from "./policy.js";
import type { PolicySource } from "./sources.js";

/** Options of {@link createPolicyStore}. */
export interface CreatePolicyStoreOptions {
  /** A port's policy until one is set (the proxy's configured default). */
  defaults: (port: number) => ServerPolicy;
}

/** A {@link PolicySource} whose policies are set by its owner (a watcher, a test). */
export interface PolicyStore extends PolicySource {
  /** Replaces a port's policy; subscribers hear of it at once. */
  set(port: number, policy: ServerPolicy): void;
  /** Forgets a port's policy: it reads its default again, and subscribers hear of it. */
  reset(port: number): void;
  /** Forgets a port's policy without telling subscribers (a watch dropped for idleness). */
  forget(port: number): void;
}

/** Creates a store of per-port policies; the writer sets, the inbound reads `current()`. */
export function createPolicyStore(options: CreatePolicyStoreOptions): PolicyStore {
  const policies = new Map<number, ServerPolicy>();
  const listeners = new Set<(port: number, policy: ServerPolicy) => void>();
  const notify = (port: number, policy: ServerPolicy): void => {
    for (const listener of listeners) listener(port, policy);
  };
  return {
    current(port) {
      let policy = policies.get(port);
      if (policy === undefined) {
        policy = options.defaults(port);
        policies.set(port, policy);
      }
      return policy;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(port, policy) {
      if (policies.get(port) === policy) return;
      policies.set(port, policy);
      notify(port, policy);
    },
    forget(port) {
      policies.delete(port);
    },
    reset(port) {
      const before = policies.get(port);
      policies.delete(port);
      const after = options.defaults(port);
      if (before !== undefined) notify(port, after);
    },
  };
}
