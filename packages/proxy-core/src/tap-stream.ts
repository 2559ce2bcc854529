import type http from "node:http";
import type { TapHub } from "./tap.js";

/**
 * Answers a tap request, for the admin `/tap` and the remote tap server
 * alike: GET streams the hub's events, one JSON line each, until the client
 * goes; 405 for another method, 429 while the hub has its most subscribers.
 * Whether the client may tap at all is the caller's check, made before.
 * @returns whether the stream started
 */
export function serveTapStream(tap: TapHub, req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const answer = (status: number, body: string, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), ...headers }).end(body);
  };
  if (req.method !== "GET") {
    answer(405, "use GET\n", { allow: "GET" });
    return false;
  }
  const subscription = tap.subscribe(res);
  if (subscription === null) {
    answer(429, "too many tap subscribers\n");
    return false;
  }
  res.once("close", () => subscription.close());
  res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
  res.flushHeaders();
  return true;
}
