import net from "node:net";
import { ProxyError } from "./errors.js";

/** A host (name or IP literal) and port. */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port`, `[v6]:port` or `:port` (host defaults to `defaultHost`).
 * @throws ProxyError `ERR_ADDRESS_INVALID`
 */
export function parseHostPort(text: string, options: { defaultHost?: string } = {}): HostPort {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (!match) throw new ProxyError("ERR_ADDRESS_INVALID", `not host:port: ${JSON.stringify(text)}`);
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (port > 65535) throw new ProxyError("ERR_ADDRESS_INVALID", `port out of range in ${JSON.stringify(text)}`);
  if (host === "") {
    if (options.defaultHost === undefined) throw new ProxyError("ERR_ADDRESS_INVALID", `missing host in ${JSON.stringify(text)}`);
    return { host: options.defaultHost, port };
  }
  if (match[1] !== undefined && net.isIPv6(host) === false) {
    throw new ProxyError("ERR_ADDRESS_INVALID", `bad IPv6 literal in ${JSON.stringify(text)}`);
  }
  return { host, port };
}

/** Formats a host and port, bracketing IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}
