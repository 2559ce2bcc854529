/**
 * meshtls-injector: the mutating admission webhook. An HTTPS server that
 * takes AdmissionReview v1 for Pods at CREATE and answers with the JSON
 * Patch `meshtls inject` applies (`reviewAdmission` in @meshtls/kubernetes).
 */
import { readFileSync } from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createKubeApiFromConfig, KubernetesError, reviewAdmission, type AdmissionOptions } from "@meshtls/kubernetes";
import { parseConfigOrExit } from "@meshtls/runtime";
import { pino } from "pino";
import { parseConfig } from "./config.ts";

// Under the webhook configuration's 10 s timeout: when the lookup is slow the API server still gets our answer (a warning,
// or a refusal with --deny-on-error) rather than failurePolicy Ignore admitting the pod silently.
const NAMESPACE_LOOKUP_TIMEOUT_MS = 5_000;
// A connection that has not finished its TLS handshake by then is closed (node's default, 120 s, lets idle sockets pile up).
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over: NodeJS.Timeout | undefined;
    // Over the limit: nothing more is kept, but the rest is read (up to 4× the limit, for at most 2 s) before the 413,
    // so that a client still sending gets the answer instead of a reset for its unread bytes.
    const tooLarge = (): void => {
      clearTimeout(over);
      resolve(undefined);
    };
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      if (over === undefined) {
        chunks.length = 0;
        over = setTimeout(tooLarge, 2000);
      }
      if (size > 4 * limit) tooLarge();
    });
    req.on("end", () => (over === undefined ? resolve(Buffer.concat(chunks)) : tooLarge()));
    req.on("error", reject);
  });
}

async function main(): Promise<void> {
  const config = parseConfigOrExit("meshtls-injector", () => parseConfig(process.argv, process.env));
  const logger = pino({ level: config.logLevel, base: { service: "meshtls-injector" } });
  const read = (file: string, flag: string): string => {
    try {
      return readFileSync(file, "utf8");
    } catch (error) {
      console.error(`meshtls-injector: cannot read ${flag} ${file}: ${(error as Error).message}`);
      process.exit(2);
    }
  };
  const trustAnchorsPem = read(config.trustAnchors, "--trust-anchors");
  let namespaceAnnotations: AdmissionOptions["namespaceAnnotations"];
  if (config.namespaceLookup) {
    try {
      const api = createKubeApiFromConfig(config.kubeconfig === undefined ? {} : { kubeconfig: config.kubeconfig });
      namespaceAnnotations = async (ns) => {
        const namespace = await api.request<{ metadata?: { annotations?: Record<string, string> } }>({ method: "GET", path: `/api/v1/namespaces/${encodeURIComponent(ns)}`, timeoutMs: NAMESPACE_LOOKUP_TIMEOUT_MS });
        return namespace.metadata?.annotations ?? {};
      };
    } catch (error) {
      if (error instanceof KubernetesError) {
        console.error(`meshtls-injector: ${error.message} [${error.code}] (--no-namespace-lookup runs without the API server)`);
        process.exit(2);
      }
      throw error;
    }
  }
  const options: AdmissionOptions = {
    trustAnchorsPem,
    controlPlaneNamespace: config.controlNamespace,
    trustDomain: config.trustDomain,
    clusterDomain: config.clusterDomain,
    defaultInboundPolicy: config.defaultInboundPolicy,
    nativeSidecar: config.nativeSidecar,
    denyOnError: config.denyOnError,
    ...(config.proxyImage === undefined ? {} : { proxyImage: config.proxyImage }),
    ...(config.initImage === undefined ? {} : { initImage: config.initImage }),
    ...(namespaceAnnotations === undefined ? {} : { namespaceAnnotations }),
  };

  const fail = (res: ServerResponse, status: number, message: string): void => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8" }).end(`${message}\n`);
  };
  const server = https.createServer({ cert: read(config.tlsCert, "--tls-cert"), key: read(config.tlsKey, "--tls-key"), minVersion: "TLSv1.2", handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, (req, res) => {
    void (async () => {
      const path = (req.url ?? "/").split("?")[0];
      if (req.method === "GET" && (path === "/live" || path === "/ready")) return void res.writeHead(200).end("ok\n");
      if (req.method !== "POST" || path !== "/") return fail(res, req.method === "POST" ? 404 : 405, "POST an AdmissionReview to /");
      let body: Buffer | undefined;
      try {
        body = await readBody(req, config.maxBodyBytes);
      } catch {
        // The client went away mid-body, or sent a malformed one (node's parser answered 400): nothing to review.
        return void res.destroy();
      }
      if (body === undefined) return fail(res, 413, `AdmissionReview over ${config.maxBodyBytes} bytes`);
      let review: unknown;
      try {
        review = JSON.parse(body.toString("utf8"));
      } catch {
        return fail(res, 400, "the body is not JSON");
      }
      try {
        const result = await reviewAdmission(review, options);
        logger.info({ uid: result.review.response.uid, outcome: result.outcome, ...(result.message === undefined ? {} : { reason: result.message }) }, "admission review");
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(result.review));
      } catch (error) {
        if (error instanceof KubernetesError) {
          logger.warn({ err: error.message }, "malformed admission review");
          return fail(res, 400, error.message);
        }
        logger.error({ err: error }, "admission review failed");
        fail(res, 500, "internal error");
      }
    })().catch((error: unknown) => {
      // Never an unhandled rejection: one bad request must not take the webhook down.
      logger.error({ err: error }, "admission request failed");
      if (res.headersSent) res.destroy();
      else fail(res, 500, "internal error");
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.listen.port, config.listen.host, resolve);
  }).catch((error: Error) => {
    console.error(`meshtls-injector: cannot listen on ${config.listen.host}:${config.listen.port}: ${error.message}`);
    process.exit(1);
  });
  const { port } = server.address() as { port: number };
  logger.info({ address: `${config.listen.host}:${port}` }, "listening");
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      logger.info({ signal }, "shutting down");
      server.close(() => process.exit(0));
      setTimeout(() => process.exit(0), 5_000).unref();
    });
  }
}

void main();
