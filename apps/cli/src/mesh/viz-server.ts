import { readFile } from "node:fs/promises";
import http from "node:http";
import { createRequire } from "node:module";
import type net from "node:net";
import { isLoopback } from "@meshtls/runtime";
import { CliError, describeError } from "../errors.ts";
import { streamTap, tapProxy, type TapLine } from "./admin-client.ts";
import { deriveEdges, scrapeProxies, type EdgeReport, type ProxyScrape, type RegistryEndpoint } from "./edges.ts";
import { VIZ_PAGE, VIZ_SCRIPT, VIZ_STYLE } from "./viz-page.ts";

/** A connection must send its first request head within this (10 s), idle or trickled; node's own headersTimeout starts only at the first byte. */
export const VIZ_FIRST_REQUEST_TIMEOUT_MS = 10_000;
/** Most SSE clients at once (16): a view for people on loopback, not a fan-out service. */
export const MAX_VIZ_CLIENTS = 16;
/** Most tap events sent to the page per batch (every 250 ms); beyond, the batch says how many were left out. */
export const MAX_TAP_EVENTS_PER_BATCH = 100;
/** Unsent event bytes one viewer may hold (4 MiB); a viewer further behind is disconnected (its page reconnects). */
export const MAX_VIEWER_BACKLOG_BYTES = 4 * 1024 * 1024;

export interface Viz {
  /** `127.0.0.1:PORT` it listens on. */
  address: string;
  url: string;
  /** The latest report (undefined before the first round). */
  latest(): EdgeReport | undefined;
  close(): Promise<void>;
}

/** `host:port` with port 0 allowed (any free port); `CliError` ERR_USAGE otherwise. */
export function splitListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || !(port >= 0 && port <= 65535)) throw new CliError("ERR_USAGE", `--listen "${text}" is not host:port (e.g. 127.0.0.1:8084, 127.0.0.1:0)`);
  return { host: m[1] ?? m[2]!, port };
}

/** cytoscape's browser build, from the CLI's own node_modules. */
async function readCytoscape(): Promise<string> {
  try {
    return await readFile(createRequire(import.meta.url).resolve("cytoscape/dist/cytoscape.min.js"), "utf8");
  } catch (error) {
    throw new CliError("ERR_IO", `cannot read cytoscape's browser build (is the cytoscape package installed?): ${describeError(error)}`, { cause: error });
  }
}

// The page, its stylesheet and scripts come from this server only; it talks to this server only.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:";

/**
 * Serves `meshtls viz`: `GET /` the page (the mesh as a graph, a live tap
 * pane, the edges table), `/assets/*` its stylesheet, script and cytoscape,
 * `GET /api/edges` the latest report as JSON, `GET /api/events`
 * Server-Sent Events: `edges` (the report, one every `intervalMs`) and `tap`
 * (arrays of the proxies' tap events, every 250 ms while anyone watches).
 * Each round scrapes every proxy once; rates are over the time since the
 * previous round (the same `deriveEdges` as `meshtls edges`). The proxies'
 * tap streams are open only while a viewer is connected. Listens on loopback
 * only (`CliError` ERR_USAGE otherwise): the view names every workload and
 * identity.
 */
export async function startViz(options: { listen: string; admins: string[]; registry: RegistryEndpoint[]; intervalMs: number; timeoutMs?: number }): Promise<Viz> {
  const { host, port } = splitListen(options.listen);
  if (!isLoopback(host)) throw new CliError("ERR_USAGE", `--listen ${options.listen}: the view listens on loopback only (127.0.0.0/8, ::1)`);
  const cytoscape = await readCytoscape();
  let latest: EdgeReport | undefined;
  let previous: { scrapes: ProxyScrape[]; at: number } | undefined;
  const clients = new Set<http.ServerResponse>();
  const broadcast = (message: string): void => {
    for (const res of clients) {
      // A viewer that does not read is dropped once its unsent backlog passes the bound, not buffered without end.
      if (res.writableLength > MAX_VIEWER_BACKLOG_BYTES) res.destroy();
      else res.write(message);
    }
  };

  const round = async (): Promise<void> => {
    const scrapes = await scrapeProxies({ admins: options.admins, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
    const at = Date.now();
    latest = deriveEdges({ current: scrapes, registry: options.registry, ...(previous === undefined ? {} : { previous: previous.scrapes, windowMs: at - previous.at }) });
    previous = { scrapes, at };
    broadcast(`event: edges\ndata: ${JSON.stringify(latest)}\n\n`);
  };

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const loop = (): void => {
    running = round().catch(() => undefined).finally(() => {
      if (!stopped) timer = setTimeout(loop, options.intervalMs);
    });
  };

  // Tap: one stream per proxy while someone watches, batched to the page.
  let tapping: AbortController | undefined;
  let pending: TapLine[] = [];
  let left = 0;
  const flushTap = setInterval(() => {
    if (pending.length === 0) return;
    broadcast(`event: tap\ndata: ${JSON.stringify(pending)}\n\n${left > 0 ? `event: tap-dropped\ndata: ${left}\n\n` : ""}`);
    pending = [];
    left = 0;
  }, 250);
  const startTap = (): void => {
    const controller = new AbortController();
    tapping = controller;
    for (const admin of options.admins) {
      void (async () => {
        // A proxy that cannot be tapped (unreachable, busy) is retried every few seconds while viewers remain.
        while (!controller.signal.aborted) {
          const proxy = await tapProxy(admin, options.timeoutMs ?? 5_000);
          await streamTap(proxy, {
            connectTimeoutMs: options.timeoutMs ?? 5_000,
            signal: controller.signal,
            onOpen: () => undefined,
            onEvent: (line) => {
              if (pending.length < MAX_TAP_EVENTS_PER_BATCH) pending.push(line);
              else left++;
            },
          }).catch(() => undefined);
          if (!controller.signal.aborted) await new Promise((resolve) => setTimeout(resolve, 3_000));
        }
      })();
    }
  };
  const stopTap = (): void => {
    tapping?.abort();
    tapping = undefined;
  };

  const assets: Record<string, { type: string; body: string }> = {
    "/assets/cytoscape.min.js": { type: "text/javascript; charset=utf-8", body: cytoscape },
    "/assets/viz.js": { type: "text/javascript; charset=utf-8", body: VIZ_SCRIPT },
    "/assets/viz.css": { type: "text/css; charset=utf-8", body: VIZ_STYLE },
  };

  const server = http.createServer({ connectionsCheckingInterval: 5_000 }, (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    res.setHeader("x-content-type-options", "nosniff");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("use GET\n");
      return;
    }
    const asset = assets[path];
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "content-security-policy": CSP }).end(VIZ_PAGE);
    } else if (asset !== undefined) {
      res.writeHead(200, { "content-type": asset.type, "cache-control": "no-cache" }).end(asset.body);
    } else if (path === "/api/edges") {
      if (latest === undefined) res.writeHead(503, { "content-type": "text/plain", "retry-after": "1" }).end("no scrape yet\n");
      else res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(latest));
    } else if (path === "/api/events") {
      if (clients.size >= MAX_VIZ_CLIENTS) {
        res.writeHead(503, { "content-type": "text/plain" }).end(`more than ${MAX_VIZ_CLIENTS} viewers\n`);
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      res.write(`retry: ${options.intervalMs}\n\n`);
      if (latest !== undefined) res.write(`event: edges\ndata: ${JSON.stringify(latest)}\n\n`);
      clients.add(res);
      if (tapping === undefined) startTap();
      res.on("close", () => {
        clients.delete(res);
        if (clients.size === 0) stopTap();
      });
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  // A request head must arrive within 10 s (checked every 5 s): trickled or idle connections do not hold sockets.
  server.headersTimeout = VIZ_FIRST_REQUEST_TIMEOUT_MS;
  server.requestTimeout = 30_000;
  // headersTimeout counts from a request's first byte: a connection that never sends one is closed here.
  const firstRequest = new WeakMap<net.Socket, NodeJS.Timeout>();
  server.on("connection", (socket: net.Socket) => {
    const timer = setTimeout(() => socket.destroy(), VIZ_FIRST_REQUEST_TIMEOUT_MS);
    firstRequest.set(socket, timer);
    socket.once("close", () => clearTimeout(timer));
  });
  server.on("request", (req: http.IncomingMessage) => clearTimeout(firstRequest.get(req.socket)));
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(new CliError("ERR_IO", `cannot listen on ${options.listen}: ${error.message}`, { cause: error })));
    server.listen(port, host, resolve);
  });
  const bound = server.address() as net.AddressInfo;
  const address = bound.family === "IPv6" ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`;
  loop();
  return {
    address,
    url: `http://${address}/`,
    latest: () => latest,
    async close() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(flushTap);
      stopTap();
      await running;
      clearTimeout(timer);
      for (const res of clients) res.end();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
