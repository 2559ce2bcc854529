import http from "node:http";
import type net from "node:net";
import { CliError } from "../errors.ts";
import { DASHBOARD_PAGE } from "./dashboard-page.ts";
import { deriveEdges, scrapeProxies, type EdgeReport, type ProxyScrape, type RegistryEndpoint } from "./edges.ts";

/** Most SSE clients at once (16): a view for people on loopback, not a fan-out service. */
export const MAX_DASHBOARD_CLIENTS = 16;

export interface Dashboard {
  /** `127.0.0.1:PORT` it listens on. */
  address: string;
  url: string;
  /** The latest report (undefined before the first round). */
  latest(): EdgeReport | undefined;
  close(): Promise<void>;
}

/** Whether `host` is a loopback address: the dashboard refuses anything else. */
export function isLoopbackHost(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === "::1" || host === "localhost";
}

/** `host:port` with port 0 allowed (any free port); `CliError` ERR_USAGE otherwise. */
export function splitListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || !(port >= 0 && port <= 65535)) throw new CliError("ERR_USAGE", `--listen "${text}" is not host:port (e.g. 127.0.0.1:8084, 127.0.0.1:0)`);
  return { host: m[1] ?? m[2]!, port };
}

/**
 * Serves the dashboard: `GET /` the page, `GET /api/edges` the latest
 * report as JSON, `GET /api/events` the reports as Server-Sent Events
 * (`event: edges`), one every `intervalMs`. Each round scrapes every proxy
 * once; rates are over the time since the previous round (the same
 * `deriveEdges` as `meshtls edges`). Listens on loopback only (`CliError`
 * ERR_USAGE otherwise): the view names every workload and identity.
 */
export async function startDashboard(options: { listen: string; admins: string[]; registry: RegistryEndpoint[]; intervalMs: number; timeoutMs?: number }): Promise<Dashboard> {
  const { host, port } = splitListen(options.listen);
  if (!isLoopbackHost(host)) throw new CliError("ERR_USAGE", `--listen ${options.listen}: the dashboard listens on loopback only (127.0.0.0/8, ::1)`);
  let latest: EdgeReport | undefined;
  let previous: { scrapes: ProxyScrape[]; at: number } | undefined;
  const clients = new Set<http.ServerResponse>();

  const round = async (): Promise<void> => {
    const scrapes = await scrapeProxies({ admins: options.admins, ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }) });
    const at = Date.now();
    latest = deriveEdges({ current: scrapes, registry: options.registry, ...(previous === undefined ? {} : { previous: previous.scrapes, windowMs: at - previous.at }) });
    previous = { scrapes, at };
    const message = `event: edges\ndata: ${JSON.stringify(latest)}\n\n`;
    for (const res of clients) res.write(message);
  };

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const loop = (): void => {
    running = round().catch(() => undefined).finally(() => {
      if (!stopped) timer = setTimeout(loop, options.intervalMs);
    });
  };

  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    res.setHeader("x-content-type-options", "nosniff");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("use GET\n");
      return;
    }
    if (path === "/") {
      res.writeHead(200, {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        // The page loads nothing from elsewhere; its one inline script talks to this server only.
        "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
      }).end(DASHBOARD_PAGE);
    } else if (path === "/api/edges") {
      if (latest === undefined) res.writeHead(503, { "content-type": "text/plain", "retry-after": "1" }).end("no scrape yet\n");
      else res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" }).end(JSON.stringify(latest));
    } else if (path === "/api/events") {
      if (clients.size >= MAX_DASHBOARD_CLIENTS) {
        res.writeHead(503, { "content-type": "text/plain" }).end(`more than ${MAX_DASHBOARD_CLIENTS} viewers\n`);
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", connection: "keep-alive" });
      res.write(`retry: ${options.intervalMs}\n\n`);
      if (latest !== undefined) res.write(`event: edges\ndata: ${JSON.stringify(latest)}\n\n`);
      clients.add(res);
      res.on("close", () => clients.delete(res));
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
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
      await running;
      clearTimeout(timer);
      for (const res of clients) res.end();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
