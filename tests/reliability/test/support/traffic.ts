// Steady traffic through a proxy: every request's outcome kept, and what a user would notice summed up
// (sent, failed, the longest stretch during which nothing succeeded).
import http from "node:http";

export interface Outcome {
  /** When the request was sent (ms since the epoch). */
  at: number;
  ok: boolean;
  /** `200`, `502 ERR_TLS_LOCAL_CERT_EXPIRED`, `ECONNRESET`, … */
  result: string;
}

export interface TrafficSummary {
  sent: number;
  failed: number;
  /** The longest time from a failed request's send to the next successful one's (ms); 0 without failures. */
  longestFailureMs: number;
  /** Each distinct failure result and how often it was seen. */
  failures: Record<string, number>;
}

/** One plain HTTP/1.1 request through an outbound HTTP proxy (`proxy` = host:port) to `authority`, on a new connection. */
export function requestVia(proxy: string, authority: string, path = "/", timeoutMs = 5000): Promise<Outcome> {
  const at = Date.now();
  const [host, port] = [proxy.slice(0, proxy.lastIndexOf(":")), Number(proxy.slice(proxy.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    let settled = false;
    const settle = (ok: boolean, result: string): void => {
      if (settled) return;
      settled = true;
      resolve({ at, ok, result });
    };
    const req = http.request({ host, port, method: "GET", path: `http://${authority}${path}`, headers: { host: authority }, agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => {
        const error = res.headers["l5d-proxy-error"];
        const ok = res.statusCode === 200 && body.endsWith("ok\n");
        // A success names the endpoint that answered (`200 b2`); a failure says how it failed.
        const answered = ok ? ` ${body.split(" ")[0] ?? ""}` : res.statusCode === 200 ? " with a cut body" : "";
        settle(ok, `${res.statusCode ?? "?"}${answered}${error === undefined ? "" : ` ${String(error)}`}`);
      });
      res.on("error", (error: NodeJS.ErrnoException) => settle(false, `body: ${error.code ?? error.message}`));
      res.on("aborted", () => settle(false, "body aborted"));
    });
    req.on("timeout", () => {
      settle(false, "timeout");
      req.destroy();
    });
    req.on("error", (error: NodeJS.ErrnoException) => settle(false, error.code ?? error.message));
    req.end();
  });
}

/** Sums a list of outcomes up. */
export function summarize(outcomes: readonly Outcome[], until = Date.now()): TrafficSummary {
  const sorted = [...outcomes].sort((a, b) => a.at - b.at);
  let failedSince: number | undefined;
  let longestFailureMs = 0;
  const failures: Record<string, number> = {};
  for (const outcome of sorted) {
    if (!outcome.ok) {
      failures[outcome.result] = (failures[outcome.result] ?? 0) + 1;
      failedSince ??= outcome.at;
    } else if (failedSince !== undefined) {
      longestFailureMs = Math.max(longestFailureMs, outcome.at - failedSince);
      failedSince = undefined;
    }
  }
  if (failedSince !== undefined) longestFailureMs = Math.max(longestFailureMs, until - failedSince);
  return { sent: sorted.length, failed: sorted.filter((o) => !o.ok).length, longestFailureMs, failures };
}

export interface Traffic {
  readonly outcomes: Outcome[];
  /** Outcomes of requests sent at or after `since` (ms since the epoch). */
  since(since: number): Outcome[];
  stop(): Promise<TrafficSummary>;
}

/**
 * `workers` loops, each sending a request, waiting for its outcome and then
 * `intervalMs`, until stopped: steady load that notices any failure at once.
 */
export function startTraffic(send: () => Promise<Outcome>, options: { workers?: number; intervalMs?: number } = {}): Traffic {
  const outcomes: Outcome[] = [];
  let running = true;
  const loops = Array.from({ length: options.workers ?? 2 }, async () => {
    while (running) {
      outcomes.push(await send());
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 20));
    }
  });
  return {
    outcomes,
    since: (since) => outcomes.filter((o) => o.at >= since),
    async stop() {
      running = false;
      await Promise.all(loops);
      return summarize(outcomes);
    },
  };
}
