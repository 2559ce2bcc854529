import { createServer } from "node:http";
import type { Server } from "node:http";
import type { Registry } from "prom-client";

/**
 * The admin HTTP server of the identity and destination services: `/metrics`
 * (Prometheus text of `registry`), `/live`, and `/ready` (200 only while
 * `ready()` says so, else 503 with its reason). Not listening yet: call
 * `listen()`. (The proxy's admin, with `/shutdown`, is part of proxy-core.)
 */
export function createAdminServer(options: { registry: Registry; ready: () => { ok: boolean; reason?: string } }): Server {
  return createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://admin");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    switch (url.pathname) {
      case "/live":
        res.writeHead(200, { "content-type": "text/plain" }).end("live\n");
        return;
      case "/ready": {
        const state = options.ready();
        res.writeHead(state.ok ? 200 : 503, { "content-type": "text/plain" }).end(state.ok ? "ready\n" : `not ready: ${state.reason ?? "starting"}\n`);
        return;
      }
      case "/metrics":
        options.registry.metrics().then(
          (text) => res.writeHead(200, { "content-type": options.registry.contentType }).end(text),
          (error: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`metrics failed: ${String(error)}\n`),
        );
        return;
      default:
        res.writeHead(404, { "content-type": "text/plain" }).end("not found; try /metrics, /live or /ready\n");
    }
  });
}
