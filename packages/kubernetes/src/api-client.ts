/**
 * The few API server calls meshtls makes, over node:http(s): JSON requests
 * and watches as newline-delimited JSON. Authentication and TLS come from a
 * client-node `KubeConfig` (kubeconfig file, `KUBECONFIG`, or in-cluster), as
 * client-node itself applies them.
 */

import http from "node:http";
import https from "node:https";
import { KubeConfig } from "@kubernetes/client-node";
import { KubernetesError } from "./errors.ts";

/** One watch event as the API server sends it. */
export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Record<string, unknown>;
}

export interface KubeRequest {
  method: "GET" | "POST";
  /** e.g. `/api/v1/pods`. */
  path: string;
  query?: Record<string, string>;
  body?: unknown;
  signal?: AbortSignal;
  /** Whole-request deadline, in ms. Default 30000. */
  timeoutMs?: number;
}

export interface KubeWatchRequest {
  path: string;
  query: Record<string, string>;
  signal?: AbortSignal;
  /** Called when the API server answered 200 and the stream is open. */
  onOpen?: () => void;
  onEvent: (event: WatchEvent) => void;
  /** Longest silence (no bytes at all) before the watch is given up as dead, in ms. Default: none. */
  idleTimeoutMs?: number;
}

/** The API server, as meshtls uses it. */
export interface KubeApi {
  /** The server's URL, for logs. */
  readonly server: string;
  /**
   * Sends one request and returns the parsed JSON answer.
   * @throws KubernetesError `ERR_KUBE_API_STATUS`, `ERR_KUBE_API_UNREACHABLE`, `ERR_KUBE_API_RESPONSE`, `ERR_KUBE_ABORTED`
   */
  request<T>(request: KubeRequest): Promise<T>;
  /**
   * Opens a watch (`watch=true` is added) and calls `onEvent` for each line
   * until the server ends the response (resolves) or something fails (rejects,
   * same codes as `request`; a broken connection is `ERR_KUBE_API_UNREACHABLE`).
   */
  watch(request: KubeWatchRequest): Promise<void>;
}

/** How to reach and authenticate to the API server. */
export interface KubeApiOptions {
  /** e.g. `https://10.96.0.1:443`. */
  server: string;
  /** Fills TLS options, the agent and headers (`Authorization`) before each request; client-node's `applyToHTTPSOptions`. */
  prepare?: (options: https.RequestOptions) => Promise<void>;
  /** Largest JSON answer accepted, in bytes. Default 64 MiB (a large cluster's pod list). */
  maxResponseBytes?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** The Status body's message and reason, when `text` is one. */
function statusOf(text: string): { message?: string; reason?: string } {
  try {
    const body = JSON.parse(text) as { kind?: unknown; message?: unknown; reason?: unknown };
    if (body.kind === "Status") {
      return {
        ...(typeof body.message === "string" ? { message: body.message } : {}),
        ...(typeof body.reason === "string" ? { reason: body.reason } : {}),
      };
    }
  } catch {
    // Not JSON: the text itself is the message.
  }
  return {};
}

/** Creates an API client. */
export function createKubeApi(options: KubeApiOptions): KubeApi {
  const base = new URL(options.server);
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new KubernetesError("ERR_KUBE_CONFIG", `the API server URL ${JSON.stringify(options.server)} is not http(s)`);
  }
  const maxResponseBytes = options.maxResponseBytes ?? 64 * 1024 * 1024;
  let agent: http.Agent | undefined;

  async function open(method: string, path: string, query: Record<string, string>, body: string | undefined, signal?: AbortSignal): Promise<{ request: http.ClientRequest; response: http.IncomingMessage }> {
    const url = new URL(base.href.replace(/\/$/, "") + path);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    const requestOptions: https.RequestOptions = { method, headers: { accept: "application/json", "user-agent": "meshtls" } };
    if (body !== undefined) Object.assign(requestOptions.headers!, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) });
    if (options.prepare) await options.prepare(requestOptions);
    // Keep the first agent `prepare` gives, so that connections are pooled per client.
    if (requestOptions.agent instanceof http.Agent) agent ??= requestOptions.agent;
    if (agent !== undefined) requestOptions.agent = agent;
    const transport = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new KubernetesError("ERR_KUBE_ABORTED", "aborted"));
        return;
      }
      const request = transport.request(url, { ...requestOptions, ...(signal === undefined ? {} : { signal }) }, (response) => resolve({ request, response }));
      request.on("error", (error) => {
        reject(
          signal?.aborted
            ? new KubernetesError("ERR_KUBE_ABORTED", "aborted", { cause: error })
            : new KubernetesError("ERR_KUBE_API_UNREACHABLE", `cannot reach the API server ${base.origin}: ${error.message}`, { cause: error }),
        );
      });
      request.end(body);
    });
  }

  async function readAll(response: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of response as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxResponseBytes) {
        response.destroy();
        throw new KubernetesError("ERR_KUBE_API_RESPONSE", `the API server's answer is over ${maxResponseBytes} bytes`);
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks).toString("utf8");
  }

  function statusError(code: number, text: string, what: string): KubernetesError {
    const status = statusOf(text);
    const message = status.message ?? (text.slice(0, 200) || http.STATUS_CODES[code] || "");
    return new KubernetesError("ERR_KUBE_API_STATUS", `${what}: HTTP ${code}: ${message}`, { httpStatus: code, ...(status.reason === undefined ? {} : { reason: status.reason }) });
  }

  return {
    server: base.origin,
    async request<T>(request: KubeRequest): Promise<T> {
      const what = `${request.method} ${request.path}`;
      const timeout = AbortSignal.timeout(request.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      const signal = request.signal === undefined ? timeout : AbortSignal.any([request.signal, timeout]);
      try {
        const { response } = await open(request.method, request.path, request.query ?? {}, request.body === undefined ? undefined : JSON.stringify(request.body), signal);
        const text = await readAll(response);
        const code = response.statusCode ?? 0;
        if (code < 200 || code > 299) throw statusError(code, text, what);
        try {
          return JSON.parse(text) as T;
        } catch (error) {
          throw new KubernetesError("ERR_KUBE_API_RESPONSE", `${what}: the answer is not JSON`, { cause: error });
        }
      } catch (error) {
        if (timeout.aborted && !(request.signal?.aborted ?? false)) {
          throw new KubernetesError("ERR_KUBE_API_UNREACHABLE", `${what}: no answer within ${request.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`, { cause: error });
        }
        if (error instanceof KubernetesError) throw error;
        if (request.signal?.aborted) throw new KubernetesError("ERR_KUBE_ABORTED", "aborted", { cause: error });
        throw new KubernetesError("ERR_KUBE_API_UNREACHABLE", `${what}: ${(error as Error).message}`, { cause: error });
      }
    },
    async watch(watch: KubeWatchRequest): Promise<void> {
      const what = `watch ${watch.path}`;
      const { request, response } = await open("GET", watch.path, { ...watch.query, watch: "true" }, undefined, watch.signal);
      const code = response.statusCode ?? 0;
      if (code !== 200) throw statusError(code, await readAll(response), what);
      watch.onOpen?.();
      await new Promise<void>((resolve, reject) => {
        let buffer = "";
        let idle: NodeJS.Timeout | undefined;
        const armIdle = (): void => {
          if (watch.idleTimeoutMs === undefined) return;
          clearTimeout(idle);
          idle = setTimeout(() => fail(new KubernetesError("ERR_KUBE_API_UNREACHABLE", `${what}: nothing received for ${watch.idleTimeoutMs} ms`)), watch.idleTimeoutMs);
        };
        let settled = false;
        const fail = (error: KubernetesError): void => {
          if (settled) return;
          settled = true;
          clearTimeout(idle);
          request.destroy();
          reject(error);
        };
        armIdle();
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          armIdle();
          buffer += chunk;
          if (buffer.length > maxResponseBytes) return fail(new KubernetesError("ERR_KUBE_API_RESPONSE", `${what}: a line over ${maxResponseBytes} bytes`));
          let i: number;
          while (!settled && (i = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, i).trim();
            buffer = buffer.slice(i + 1);
            if (line === "") continue;
            let event: WatchEvent;
            try {
              event = JSON.parse(line) as WatchEvent;
            } catch (error) {
              return fail(new KubernetesError("ERR_KUBE_API_RESPONSE", `${what}: a line is not JSON`, { cause: error }));
            }
            if (typeof event !== "object" || event === null || typeof event.type !== "string" || typeof event.object !== "object" || event.object === null) {
              return fail(new KubernetesError("ERR_KUBE_API_RESPONSE", `${what}: a line is not a watch event`));
            }
            try {
              watch.onEvent(event);
            } catch (error) {
              return fail(error instanceof KubernetesError ? error : new KubernetesError("ERR_KUBE_API_RESPONSE", `${what}: ${(error as Error).message}`, { cause: error }));
            }
          }
        });
        response.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(idle);
          resolve();
        });
        const broken = (error?: Error): void =>
          fail(
            watch.signal?.aborted
              ? new KubernetesError("ERR_KUBE_ABORTED", "aborted")
              : new KubernetesError("ERR_KUBE_API_UNREACHABLE", `${what}: the connection broke${error ? `: ${error.message}` : ""}`, { cause: error }),
          );
        response.on("aborted", () => broken());
        response.on("error", broken);
        response.on("close", () => {
          if (!response.complete) broken();
        });
      });
    },
  };
}

/** The fields of `object` that are set. */
function pick<T extends object, K extends keyof T>(object: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const key of keys) if (object[key] !== undefined) out[key] = object[key];
  return out;
}

/** Where the API server's address and credentials come from. */
export interface KubeConfigSource {
  /** A kubeconfig file. Default: client-node's `loadFromDefault` (`KUBECONFIG`, `~/.kube/config`, then in-cluster). */
  kubeconfig?: string;
  /** The kubeconfig context to use. Default: its current context. */
  context?: string;
}

/**
 * Loads a kubeconfig as client-node does and returns an API client using it.
 * @throws KubernetesError `ERR_KUBE_CONFIG`
 */
export function createKubeApiFromConfig(source: KubeConfigSource = {}): KubeApi {
  const kc = new KubeConfig();
  try {
    if (source.kubeconfig === undefined) kc.loadFromDefault();
    else kc.loadFromFile(source.kubeconfig);
    if (source.context !== undefined) kc.setCurrentContext(source.context);
  } catch (error) {
    throw new KubernetesError("ERR_KUBE_CONFIG", `cannot load the kubeconfig${source.kubeconfig === undefined ? "" : ` ${source.kubeconfig}`}: ${(error as Error).message}`, { cause: error });
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new KubernetesError("ERR_KUBE_CONFIG", "the kubeconfig names no current cluster (no context, or a context without cluster)");
  if (source.context !== undefined && kc.getContextObject(source.context) === null) {
    throw new KubernetesError("ERR_KUBE_CONFIG", `the kubeconfig has no context ${JSON.stringify(source.context)}`);
  }
  let keepAlive: http.Agent | undefined;
  return createKubeApi({
    server: cluster.server,
    prepare: async (options) => {
      try {
        await kc.applyToHTTPSOptions(options);
      } catch (error) {
        throw new KubernetesError("ERR_KUBE_CONFIG", `cannot apply the kubeconfig's credentials: ${(error as Error).message}`, { cause: error });
      }
      // client-node's agent closes each connection after one request; without a proxy, one keep-alive agent
      // with the same TLS settings (CA, client certificate, verification, server name) reuses them.
      if (cluster.proxyUrl === undefined) {
        keepAlive ??= cluster.server.startsWith("https:")
          ? new https.Agent({
              keepAlive: true,
              ...pick(options, ["ca", "cert", "key", "pfx", "passphrase", "rejectUnauthorized", "servername"]),
            })
          : new http.Agent({ keepAlive: true });
        options.agent = keepAlive;
      }
    },
  });
}
