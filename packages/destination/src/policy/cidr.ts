import { ApiError, ipAddressToString, ipToIpAddress } from "@meshtls/api";
import { DestinationError } from "../errors.js";
import type { Cidr } from "./model.js";

/** An IP literal as a 128-bit number and its family width. */
function toBits(address: string): { value: bigint; width: 32 | 128 } {
  const ip = ipToIpAddress(address).ip;
  if (ip?.$case === "ipv4") return { value: BigInt(ip.value), width: 32 };
  if (ip?.$case === "ipv6") return { value: ((ip.value.first ?? 0n) << 64n) | (ip.value.last ?? 0n), width: 128 };
  throw new ApiError("ERR_INVALID_IP", `${address} is not an IP address`);
}

/**
 * Parses `10.0.0.0/8`, `fd00::/8` or a bare IP (a /32 or /128) into a canonical `Cidr`.
 * @throws DestinationError `ERR_POLICY_INVALID` naming the text
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  const ip = slash < 0 ? text : text.slice(0, slash);
  let address: string;
  let width: number;
  try {
    address = ipAddressToString(ipToIpAddress(ip));
    width = toBits(address).width;
  } catch (cause) {
    if (!(cause instanceof ApiError)) throw cause;
    throw new DestinationError("ERR_POLICY_INVALID", `${JSON.stringify(text)} is not an IP network (e.g. 10.0.0.0/8, fd00::/8, 192.0.2.1)`, { cause });
  }
  const prefix = slash < 0 ? String(width) : text.slice(slash + 1);
  const prefixLength = /^[0-9]{1,3}$/.test(prefix) ? Number(prefix) : NaN;
  if (!(prefixLength >= 0 && prefixLength <= width)) {
    throw new DestinationError("ERR_POLICY_INVALID", `${JSON.stringify(text)}: the prefix length must be 0..${width}`);
  }
  return { address, prefixLength };
}

/** Whether `inner` lies inside `outer` (same family, longer or equal prefix, same leading bits). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  const a = toBits(outer.address);
  const b = toBits(inner.address);
  if (a.width !== b.width || inner.prefixLength < outer.prefixLength) return false;
  const shift = BigInt(a.width - outer.prefixLength);
  return a.value >> shift === b.value >> shift;
}

/** Linkerd's "all networks": 0.0.0.0/0 and ::/0. */
export const ALL_NETWORKS: readonly Cidr[] = Object.freeze([
  { address: "0.0.0.0", prefixLength: 0 },
  { address: "::", prefixLength: 0 },
]);

/** Linkerd's default `clusterNetworks`. */
export const DEFAULT_CLUSTER_NETWORKS: readonly Cidr[] = Object.freeze(
  ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"].map(parseCidr),
);
