import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { Counter } from "prom-client";
import type { Registry } from "prom-client";
import type { Logger } from "./logger.ts";

/** Bounds on the admin HTTP server's connections; every field is optional. */
export interface AdminServerLimits {
  /** Time for a client to send a request's headers, in milliseconds. Default 10000. */
  headersTimeoutMs?: number;
  /** Time for a client to send a whole request, in milliseconds. Default 30000. */
  requestTimeoutMs?: number;
  /** How long an idle keep-alive connection is kept, in milliseconds. Default 5000. */
  keepAliveTimeoutMs?: number;
  /** Largest request head (request line and headers), in bytes; larger ones answer 431. Default 16384. */
  maxHeaderBytes?: number;
  /** Open connections at most; more are closed at once. Default 256. */
  maxConnections?: number;
}

/** The limits used when none are given (see {@link AdminServerLimits}). */
export const ADMIN_SERVER_LIMITS: Readonly<Required<AdminServerLimits>> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  maxHeaderBytes: 16_384,
  maxConnections: 256,
});

/**
 * What `/ready` answers: 200 `ready` while `ok`, else 503 `not ready: <reason>`
 * (`starting` when no reason is given). The one readiness contract of every
 * meshtls admin server (docs/reference/admin.md).
 */
export interface AdminReadiness {
  ok: boolean;
  reason?: string;
}

/**
 * A route of a server's own (the proxy's `/identity`, `/tap`, `/shutdown`):
 * it answers every method itself. A throw answers 500.
 */
export type AdminRoute = (req: IncomingMessage, res: ServerResponse) => void;

export interface AdminServerOptions {
  /**
   * Served on `/metrics`. The server registers `tcp_connections_refused_total{listener="admin",reason="max_connections"}`
   * in it (the proxy's metric): connections closed at once because `limits.maxConnections` were open.
   */
  registry: Registry;
  /** Called on each `/ready`. */
  ready: () => AdminReadiness;
  limits?: AdminServerLimits;
  /** More paths, each answered by its route (`/metrics`, `/live` and `/ready` cannot be replaced). Default none. */
  routes?: Readonly<Record<string, AdminRoute>>;
  /** Where a failing request is logged. Default: not logged. */
  logger?: Logger;
}

/**
 * The admin HTTP server of every meshtls binary: `/metrics` (Prometheus text
 * of `registry`), `/live`, and `/ready` (see {@link AdminReadiness}), plus the
 * binary's own `routes` (the proxy adds `/identity`, `/tap`, `/shutdown` and
 * `/renew` this way). Not listening yet: call `listen()`.
 *
 * Nothing a client sends can throw out of its handler: a request target that
 * is not a path answers 400, a failing `ready()`, registry or route 500. Slow
 * or idle clients are cut off by the timeouts in `limits`.
 */
export function createAdminServer(options: AdminServerOptions): Server {
  const limits = { ...ADMIN_SERVER_LIMITS, ...options.limits };
  const server = createServer(
    {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      maxHeaderSize: limits.maxHeaderBytes,
      // How often the two timeouts above are checked (node's default, 30 s, would let them run late by as much).
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
    },
    (req, res) => {
      try {
        handle(req, res, options);
      } catch (error) {
        options.logger?.error({ err: String(error), path: req.url }, "admin request failed");
        if (res.headersSent) res.destroy();
        else answer(res, 500, `admin request failed: ${String(error)}\n`);
      }
    },
  );
  server.maxConnections = limits.maxConnections;
  const refused = refusedCounter(options.registry);
  server.on("drop", () => refused.inc({ listener: "admin", reason: "max_connections" }));
  return server;
}

const REFUSED_METRIC = "tcp_connections_refused_total";

/** The registry's `tcp_connections_refused_total`, registered on first use (a second admin server on one registry shares it). */
function refusedCounter(registry: Registry): Counter<"listener" | "reason"> {
  const existing = registry.getSingleMetric(REFUSED_METRIC);
  if (existing instanceof Counter) return existing as Counter<"listener" | "reason">;
  return new Counter({
    name: REFUSED_METRIC,
    help: "Connections a listener closed at once, before reading a byte, because its maximum of open connections was reached.",
    labelNames: ["listener", "reason"],
    registers: [registry],
  });
}

function handle(req: IncomingMessage, res: ServerResponse, options: AdminServerOptions): void {
  const path = requestPath(req.url);
  if (path === undefined) {
    answer(res, 400, `bad request target; try ${paths(options)}\n`);
    return;
  }
  if (!BUILT_IN.has(path)) {
    const routes = options.routes ?? {};
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (route === undefined) answer(res, 404, `not found; try ${paths(options)}\n`);
    else route(req, res);
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD" }).end();
    return;
  }
  switch (path) {
    case "/live":
      answer(res, 200, "live\n");
      return;
    case "/ready": {
      const state = options.ready();
      answer(res, state.ok ? 200 : 503, state.ok ? "ready\n" : `not ready: ${state.reason ?? "starting"}\n`);
      return;
    }
    case "/metrics":
      // A registry that throws instead of rejecting is caught by the promise too.
      Promise.resolve()
        .then(() => options.registry.metrics())
        .then(
          (text) => answer(res, 200, text, options.registry.contentType),
          (error: unknown) => answer(res, 500, `metrics failed: ${String(error)}\n`),
        );
  }
}

const BUILT_IN = new Set(["/metrics", "/live", "/ready"]);

function paths(options: AdminServerOptions): string {
  const all = [...BUILT_IN, ...Object.keys(options.routes ?? {}).filter((path) => !BUILT_IN.has(path))];
  return `${all.slice(0, -1).join(", ")} or ${all.at(-1) ?? ""}`;
}

/**
 * The path of an origin-form request target (`/ready?x=1` → `/ready`), or
 * undefined for anything else (`*`, `//[`, `http://[`, an absolute URI): the
 * admin server has no use for those, and `new URL` would throw on some.
 */
export function requestPath(target: string | undefined): string | undefined {
  if (target === undefined || !target.startsWith("/") || target.startsWith("//")) return undefined;
  const end = target.search(/[?#]/);
  return end === -1 ? target : target.slice(0, end);
}

function answer(res: ServerResponse, status: number, body: string, contentType = "text/plain"): void {
  // The connection may be gone (or a partial answer sent) by the time a slow registry answers.
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": contentType }).end(body);
}
