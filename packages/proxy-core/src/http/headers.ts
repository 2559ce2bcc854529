import type { IncomingHttpHeaders } from "node:http";

/** Linkerd's header names (linkerd2-proxy; LINKERD-FACTS §6.4). */
export const L5D_CLIENT_ID = "l5d-client-id";
export const L5D_DST_CANONICAL = "l5d-dst-canonical";
export const L5D_ORIG_PROTO = "l5d-orig-proto";
export const L5D_PROXY_ERROR = "l5d-proxy-error";
export const L5D_PROXY_CONNECTION = "l5d-proxy-connection";

/** Header fields a proxy never forwards (RFC 9110 §7.6.1), nor sends in HTTP/2 (RFC 9113 §8.2.2). */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "transfer-encoding", "upgrade", "trailer", "http2-settings", L5D_PROXY_CONNECTION]);

/** Header fields as forwarded: lower-case names, no pseudo-headers, no hop-by-hop fields. */
export type Headers = Record<string, string | string[]>;

/**
 * Copies the end-to-end fields of `input`, dropping hop-by-hop ones (and those
 * a `connection` field names) and HTTP/2 pseudo-headers; `te` survives only as
 * `trailers` (gRPC needs it).
 */
export function endToEndHeaders(input: IncomingHttpHeaders | Record<string, string | string[] | undefined>): Headers {
  const connection = input.connection;
  // The fields a `connection` header names are hop-by-hop too; most name only hop-by-hop ones already (keep-alive).
  let named: Set<string> | undefined;
  for (const value of Array.isArray(connection) ? connection : connection === undefined ? [] : [connection]) {
    for (const name of String(value).split(",")) {
      const field = name.trim().toLowerCase();
      if (!HOP_BY_HOP.has(field)) (named ??= new Set()).add(field);
    }
  }
  const out: Headers = {};
  for (const name in input) {
    const value = input[name];
    if (value === undefined || name.charCodeAt(0) === 58 /* ":" */ || HOP_BY_HOP.has(name) || named?.has(name) === true) continue;
    if (name === "te") {
      if (String(value).toLowerCase().includes("trailers")) out.te = "trailers";
      continue;
    }
    // HTTP/2 forbids `host` beside `:authority`; callers set the authority themselves.
    if (name === "host") continue;
    out[name] = value;
  }
  return out;
}

/** The single value of a header field, when present. */
export function headerValue(headers: Headers | IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}
