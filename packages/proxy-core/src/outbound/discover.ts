import net from "node:net";
import { parseHostPort } from "../address.js";
import { ProxyError } from "../errors.js";
import type { Endpoint, EndpointResolver, Resolution } from "../sources.js";

/** Options of {@link createDiscover}. */
export interface CreateDiscoverOptions {
  resolver: EndpointResolver;
  /** Waiting for the first answer of service discovery. */
  discoveryTimeoutMs: number;
  /** Most authorities with a live discovery; the oldest is dropped beyond. */
  maxResolutions: number;
}

/** The discovery layer: an authority's endpoints now, from a cached live resolution. */
export interface Discover {
  /** @throws ProxyError `ERR_DISCOVERY_TIMEOUT`, `ERR_DISCOVERY_UNKNOWN`, `ERR_NO_ENDPOINTS` */
  endpoints(authority: string): Promise<Endpoint[]>;
  close(): void;
}

/**
 * Creates the discovery layer. Only an IP the destination service explicitly
 * does not know is reached directly, in plaintext; an unknown name is refused.
 */
export function createDiscover(options: CreateDiscoverOptions): Discover {
  const resolutions = new Map<string, Resolution>();
  return {
    async endpoints(authority) {
      let resolution = resolutions.get(authority);
      if (resolution === undefined) {
        if (resolutions.size >= options.maxResolutions) {
          const oldest = resolutions.keys().next().value;
          if (oldest !== undefined) {
            resolutions.get(oldest)?.close();
            resolutions.delete(oldest);
          }
        }
        resolution = options.resolver.resolve(authority);
        resolutions.set(authority, resolution);
      }
      let set = resolution.current();
      if (set === undefined) {
        try {
          set = await resolution.ready({ timeoutMs: options.discoveryTimeoutMs });
        } catch (cause) {
          resolutions.delete(authority);
          resolution.close();
          throw new ProxyError("ERR_DISCOVERY_TIMEOUT", `no answer from service discovery for ${authority}`, { cause });
        }
      }
      if (!set.exists) {
        const { host, port } = parseHostPort(authority);
        if (net.isIP(host)) return [{ address: host, port, weight: 1, labels: {} }];
        throw new ProxyError("ERR_DISCOVERY_UNKNOWN", `service discovery does not know ${authority}`);
      }
      if (set.endpoints.length === 0) throw new ProxyError("ERR_NO_ENDPOINTS", `${authority} has no endpoints`);
      return set.endpoints;
    },
    close() {
      for (const resolution of resolutions.values()) resolution.close();
      resolutions.clear();
    },
  };
}
