import { readFile } from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type tls from "node:tls";
import { CliError, describeError } from "../errors.ts";
import { workloadOfIdentity } from "./edges.ts";
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

/** `--cert`, `--key`, `--ca` (and optionally the identity the proxy must present) for a proxy's mutual-TLS tap listener. */
export interface TapClientFiles {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** The identity the proxy's certificate must name; default any identity chained to `caFile`. */
  proxyIdentity?: string;
}

/** The proxy an event came from. */
export interface TapProxy {
  /** Its admin address, or its `--tap-addr` listener. */
  admin: string;
  identity: string | null;
  workload: string | null;
}

/** One event of a proxy's `/tap` (see docs/reference/observability.md), with the proxy it came from. */
export interface TapLine {
  proxy: TapProxy;
  type: "connection" | "authz" | "request";
  timeMs: number;
  direction: "inbound" | "outbound";
  tls?: string;
  peerId?: string;
  [field: string]: unknown;
}

/** The proxy at admin address `admin`, named by its `GET /identity` when it answers. */
export async function tapProxy(admin: string, timeoutMs: number): Promise<TapProxy> {
  try {
    const res = await getAdmin({ address: admin, path: "/identity", timeoutMs });
    const identity = (JSON.parse(res.body) as { identity?: unknown }).identity;
    if (typeof identity === "string") return { admin, identity, workload: workloadOfIdentity(identity) };
  } catch {
    // Named by its address only; the stream itself says whether it is reachable.
  }
  return { admin, identity: null, workload: null };
}

/** The client TLS options for a mutual-TLS tap listener, read from the files. */
export async function tapTlsOptions(files: TapClientFiles): Promise<https.RequestOptions> {
  const read = async (file: string, what: string): Promise<string> => {
    try {
      return await readFile(file, "utf8");
    } catch (error) {
      throw new CliError("ERR_IO", `cannot read ${what} ${file}: ${describeError(error)}`, { cause: error });
    }
  };
  const [cert, key, ca] = await Promise.all([read(files.certFile, "--cert"), read(files.keyFile, "--key"), read(files.caFile, "--ca")]);
  return {
    cert,
    key,
    ca,
    minVersion: "TLSv1.3",
    // A proxy presents its mesh identity (a DNS name), not the address dialled: the chain is checked against --ca, the name against --proxy-identity.
    checkServerIdentity: (_host: string, certificate: tls.PeerCertificate) => {
      const names = (certificate.subjectaltname ?? "").split(", ").filter((n) => n.startsWith("DNS:")).map((n) => n.slice(4));
      if (files.proxyIdentity !== undefined && !names.includes(files.proxyIdentity)) return new Error(`the proxy presents ${names.join(", ") || "no identity"}, not ${files.proxyIdentity}`);
      return undefined;
    },
  };
}

/** Opens one proxy's `/tap` and calls `onEvent` per line until `signal` aborts or the proxy closes. Throws `CliError` ERR_CONNECT when it cannot subscribe. */
export function streamTap(proxy: TapProxy, options: { connectTimeoutMs: number; signal: AbortSignal; onOpen: () => void; onEvent: (line: TapLine) => void; tls?: https.RequestOptions }): Promise<void> {
  const { host, port } = splitHostPort(proxy.admin);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(new CliError("ERR_CONNECT", `${proxy.admin}/tap: no answer within ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
    const onResponse = (res: http.IncomingMessage): void => {
      clearTimeout(timer);
      if (res.statusCode !== 200) {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body = (body + chunk).slice(0, 200)));
        res.on("end", () => reject(new CliError("ERR_CONNECT", `${proxy.admin}/tap: HTTP ${res.statusCode}: ${body.trim()}`)));
        return;
      }
      options.onOpen();
      let partial = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        partial += chunk;
        const lines = partial.split("\n");
        partial = lines.pop() ?? "";
        for (const raw of lines) {
          if (raw === "") continue;
          try {
            options.onEvent({ ...(JSON.parse(raw) as TapLine), proxy });
          } catch {
            // A line the proxy did not write whole: skipped, the stream goes on.
          }
        }
      });
      res.on("close", () => resolve());
    };
    const request = { host, port, path: "/tap", agent: false, headers: { accept: "application/x-ndjson" } } as const;
    const req = options.tls === undefined
      ? http.get(request, onResponse)
      : https.get({ ...request, ...options.tls }, (res) => {
          // Named by the identity its certificate proved.
          const presented = (res.socket as tls.TLSSocket).getPeerCertificate().subjectaltname?.split(", ").find((n) => n.startsWith("DNS:"))?.slice(4);
          if (presented !== undefined) Object.assign(proxy, { identity: presented, workload: workloadOfIdentity(presented) });
          onResponse(res);
        });
    req.on("error", (cause) => {
      clearTimeout(timer);
      if (options.signal.aborted) resolve();
      else reject(new CliError("ERR_CONNECT", `${proxy.admin}/tap: ${cause.message}`, { cause }));
    });
    options.signal.addEventListener("abort", () => req.destroy(), { once: true });
  });
}
