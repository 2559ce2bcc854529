import http from "node:http";
import { CliError } from "../errors.ts";
import { parsePrometheusText, type Sample } from "./prometheus.ts";

/** Default bound of one admin request: 5 s. */
export const DEFAULT_ADMIN_TIMEOUT_MS = 5_000;
/** Largest admin response read (4 MiB); more is refused. */
export const MAX_ADMIN_RESPONSE_BYTES = 4 * 1024 * 1024;

export interface AdminResponse {
  status: number;
  body: string;
}

/**
 * GETs `path` from an admin server at `host:port` (plain HTTP, as the proxies
 * and services serve it). Throws `CliError` ERR_CONNECT when it cannot connect,
 * times out (`timeoutMs`, default 5 s) or answers more than 4 MiB.
 */
export function getAdmin(options: { address: string; path: string; timeoutMs?: number }): Promise<AdminResponse> {
  return requestAdmin({ ...options, method: "GET" });
}

/** Like getAdmin, with another method (`POST /renew`); no request body is sent. */
export function requestAdmin(options: { address: string; path: string; method: "GET" | "POST"; timeoutMs?: number; accept?: string }): Promise<AdminResponse> {
  const { host, port } = splitHostPort(options.address);
  const timeoutMs = options.timeoutMs ?? DEFAULT_ADMIN_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const fail = (message: string, cause?: unknown): void => {
      req.destroy();
      reject(new CliError("ERR_CONNECT", `${options.address}${options.path}: ${message}`, { cause }));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    const req = http.request({ host, port, path: options.path, method: options.method, agent: false, headers: { accept: options.accept ?? "text/plain" } }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ADMIN_RESPONSE_BYTES) {
          clearTimeout(timer);
          fail(`answer larger than ${MAX_ADMIN_RESPONSE_BYTES} bytes`);
          return;
        }
        chunks.push(chunk);
      });
      res.on("end", () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
      });
      res.on("error", (error) => {
        clearTimeout(timer);
        fail(error.message, error);
      });
    });
    req.on("error", (error) => {
      clearTimeout(timer);
      reject(new CliError("ERR_CONNECT", `cannot reach ${options.address}: ${(error as NodeJS.ErrnoException).code ?? error.message}`, { cause: error }));
    });
    req.end();
  });
}

/** GET /metrics and parse it. */
export async function scrapeMetrics(options: { address: string; timeoutMs?: number }): Promise<Sample[]> {
  const res = await getAdmin({ ...options, path: "/metrics" });
  if (res.status !== 200) {
    throw new CliError("ERR_CONNECT", `${options.address}/metrics answered HTTP ${res.status}`);
  }
  return parsePrometheusText(res.body);
}

/** `host:port` or `[v6]:port` → parts; CliError ERR_USAGE otherwise. */
export function splitHostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (m === null || !(port >= 1 && port <= 65535)) {
    throw new CliError("ERR_USAGE", `"${text}" is not host:port (e.g. 127.0.0.1:4191, [::1]:4191)`);
  }
  return { host: m[1] ?? m[2]!, port };
}
