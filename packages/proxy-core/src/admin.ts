import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "./logger.js";
import { noopLogger } from "./logger.js";

/** Options of {@link createAdminServer}. */
export interface CreateAdminServerOptions {
  registry: Registry;
  /**
   * `true` when the proxy can serve mesh TLS, otherwise why not (the body of
   * the 503 `/ready` answers, e.g. no certificate yet or the certificate expired).
   */
  ready: () => true | string;
  /** Called on `POST /shutdown` from a loopback address. */
  onShutdown: () => void;
  logger?: Logger;
}

/** The admin HTTP server: `/metrics`, `/live`, `/ready`, `/shutdown`. */
export interface AdminServer {
  listen(options: { host: string; port: number }): Promise<AddressInfo>;
  close(): Promise<void>;
}

/** Whether a socket's remote address is loopback (127/8, ::1, IPv4-mapped 127/8). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === "::1" || /^(::ffff:)?127\.\d+\.\d+\.\d+$/i.test(address);
}

/** Creates the admin server; it never touches the data path. */
export function createAdminServer(options: CreateAdminServerOptions): AdminServer {
  const logger = options.logger ?? noopLogger;
  const send = (res: http.ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8"): void => {
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) });
    res.end(body);
  };
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    switch (path) {
      case "/metrics":
        options.registry.metrics().then(
          (text) => send(res, 200, text, options.registry.contentType),
          (cause: unknown) => send(res, 500, `metrics failed: ${String(cause)}\n`),
        );
        return;
      case "/live":
        send(res, 200, "live\n");
        return;
      case "/ready":
      {
        const readiness = options.ready();
        if (readiness === true) send(res, 200, "ready\n");
        else send(res, 503, `not ready: ${readiness}\n`);
        return;
      }
      case "/shutdown":
        if (!isLoopback(req.socket.remoteAddress)) {
          send(res, 403, "shutdown is only accepted from loopback\n");
          return;
        }
        if (req.method !== "POST") {
          res.setHeader("allow", "POST");
          send(res, 405, "use POST\n");
          return;
        }
        logger.info({ remote: req.socket.remoteAddress }, "shutdown requested on the admin server");
        send(res, 202, "shutting down\n");
        options.onShutdown();
        return;
      default:
        send(res, 404, "not found\n");
    }
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  return {
    listen: ({ host, port }) =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve(server.address() as AddressInfo);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
