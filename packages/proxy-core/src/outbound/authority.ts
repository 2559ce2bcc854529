import net from "node:net";
import { formatHostPort, parseHostPort } from "../address.js";
import { ProxyError } from "../errors.js";

/** `host:port` as an authority, defaulting the port; lower-cased host. @throws ProxyError `ERR_ADDRESS_INVALID` */
export function normalizeAuthority(text: string, defaultPort?: number): string {
  const withPort = defaultPort !== undefined && !/:\d+$/.test(text) && !/^\[.*\]$/.test(text) ? `${text}:${defaultPort}` : text;
  const { host, port } = parseHostPort(withPort);
  if (port === 0) throw new ProxyError("ERR_ADDRESS_INVALID", `port 0 in ${JSON.stringify(text)}`);
  if (!net.isIP(host) && !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i.test(host)) {
    throw new ProxyError("ERR_ADDRESS_INVALID", `not a host name: ${JSON.stringify(host)}`);
  }
  return formatHostPort(host.toLowerCase().replace(/\.$/, ""), port);
}
