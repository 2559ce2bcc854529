import { ApiError } from "./errors.js";
import type { IPAddress, TcpAddress } from "./gen/net.js";

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HEXTET_RE = /^[0-9a-fA-F]{1,4}$/;
const MASK64 = (1n << 64n) - 1n;

function parseIPv4(ip: string): number | undefined {
  if (!IPV4_RE.test(ip)) return undefined;
  return ip.split(".").reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

/** Parses an IPv6 literal (no brackets, no zone) into its 128-bit value. */
function parseIPv6(ip: string): bigint | undefined {
  if (ip.length > 45 || ip.includes("%")) return undefined;
  let text = ip;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (lastColon >= 0 && text.slice(lastColon + 1).includes(".")) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = [v4 >>> 16, v4 & 0xffff];
    text = text.slice(0, lastColon + 1) + "0:0";
    // The two placeholder hextets are replaced by `tail` below.
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const parseGroups = (part: string | undefined): string[] | undefined =>
    part === undefined || part === "" ? [] : part.split(":");
  const head = parseGroups(halves[0]);
  const rest = parseGroups(halves[1]);
  if (head === undefined || rest === undefined) return undefined;
  const groups: string[] = [];
  if (halves.length === 2) {
    const missing = 8 - head.length - rest.length;
    if (missing < 1) return undefined;
    groups.push(...head, ...Array<string>(missing).fill("0"), ...rest);
  } else {
    groups.push(...head);
  }
  if (groups.length !== 8 || !groups.every((g) => HEXTET_RE.test(g))) return undefined;
  const values = groups.map((g) => parseInt(g, 16));
  if (tail.length === 2) values.splice(6, 2, tail[0] ?? 0, tail[1] ?? 0);
  return values.reduce((acc, v) => (acc << 16n) | BigInt(v), 0n);
}

/** Formats a 128-bit value as a canonical (RFC 5952) IPv6 literal. */
function formatIPv6(value: bigint): string {
  const groups: string[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(((value >> shift) & 0xffffn).toString(16));
  // The WHATWG URL serializer implements RFC 5952 compression.
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

/**
 * Encodes an IP literal as the net proto says: IPv4 as one big-endian integer
 * (10.0.0.1 is 0x0A000001), IPv6 as two big-endian 64-bit halves.
 * @throws ApiError `ERR_INVALID_IP`
 */
export function ipToIpAddress(ip: string): IPAddress {
  const v4 = parseIPv4(ip);
  if (v4 !== undefined) return { ip: { $case: "ipv4", value: v4 } };
  const v6 = parseIPv6(ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip);
  if (v6 !== undefined) return { ip: { $case: "ipv6", value: { first: v6 >> 64n, last: v6 & MASK64 } } };
  throw new ApiError("ERR_INVALID_IP", `not an IPv4 or IPv6 literal: ${JSON.stringify(ip.slice(0, 64))}`);
}

/**
 * Encodes an IP literal and a TCP port as a `TcpAddress`.
 * @throws ApiError `ERR_INVALID_IP`, `ERR_INVALID_PORT` (not an integer in 0..65535)
 */
export function ipToTcpAddress(ip: string, port: number): TcpAddress {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ApiError("ERR_INVALID_PORT", `not a TCP port: ${String(port)}`);
  }
  return { ip: ipToIpAddress(ip), port };
}

/**
 * Decodes an `IPAddress` into its literal (IPv6 in RFC 5952 form).
 * @throws ApiError `ERR_INVALID_TCP_ADDRESS` when no address is set or a value is out of range
 */
export function ipAddressToString(address: IPAddress | undefined): string {
  const ip = address?.ip;
  if (ip === undefined) throw new ApiError("ERR_INVALID_TCP_ADDRESS", "the address carries no IP");
  if (ip.$case === "ipv4") {
    const v = ip.value;
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new ApiError("ERR_INVALID_TCP_ADDRESS", `IPv4 value out of range: ${String(v)}`);
    }
    return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff].join(".");
  }
  const { first, last } = ip.value;
  if (first < 0n || first > MASK64 || last < 0n || last > MASK64) {
    throw new ApiError("ERR_INVALID_TCP_ADDRESS", "IPv6 half out of range");
  }
  return formatIPv6((first << 64n) | last);
}

/**
 * Decodes a `TcpAddress` into its IP literal and port.
 * @throws ApiError `ERR_INVALID_TCP_ADDRESS`
 */
export function tcpAddressToIp(address: TcpAddress): { ip: string; port: number } {
  if (!Number.isInteger(address.port) || address.port < 0 || address.port > 65535) {
    throw new ApiError("ERR_INVALID_TCP_ADDRESS", `port out of range: ${String(address.port)}`);
  }
  return { ip: ipAddressToString(address.ip), port: address.port };
}

/**
 * Formats a `TcpAddress` as `10.0.0.1:80` or `[fd00::1]:80`.
 * @throws ApiError `ERR_INVALID_TCP_ADDRESS`
 */
export function tcpAddressToString(address: TcpAddress): string {
  const { ip, port } = tcpAddressToIp(address);
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}
