// gRPC over node:http2 without a gRPC library: legitimate calls (is it still serving?) and malformed ones.
import http2 from "node:http2";
import type { SecureClientSessionOptions } from "node:http2";
import { CertifyRequest, CertifyResponse, GetDestination, PortSpec } from "@meshtls/api";
import { grpcMessage } from "./http2-frames.ts";
import type { Material, Service } from "./mesh.ts";

export const CERTIFY = "/io.linkerd.proxy.identity.Identity/Certify";
export const GET = "/io.linkerd.proxy.destination.Destination/Get";
export const GET_PROFILE = "/io.linkerd.proxy.destination.Destination/GetProfile";
export const GET_PORT = "/io.linkerd.proxy.inbound.InboundServerPolicies/GetPort";
export const WATCH_PORT = "/io.linkerd.proxy.inbound.InboundServerPolicies/WatchPort";

export interface CallResult {
  /** The HTTP :status, if a response started. */
  status?: number;
  /** grpc-status from the headers (trailers-only) or trailers. */
  grpcStatus?: number;
  grpcMessage?: string;
  /** The response body (gRPC-framed messages). */
  data: Buffer;
  /** A session or stream error (e.g. RST_STREAM, GOAWAY, reset). */
  error?: string;
  timedOut: boolean;
}

/** TLS options a client of `service` uses; `clientLeaf` adds a client certificate (destination's mTLS). */
export function tlsOptions(service: Service, material: Material, clientLeaf?: { keyPem: string; chainPem: string }): SecureClientSessionOptions | undefined {
  if (!service.tls) return undefined;
  return {
    ca: material.caPem,
    servername: service.serverName,
    ...(clientLeaf === undefined ? {} : { key: clientLeaf.keyPem, cert: clientLeaf.chainPem }),
  };
}

/**
 * One call on a connection of its own: `body` is written as is (already gRPC
 * framed, or not at all), then the stream is ended. With `firstMessageOnly`,
 * the call is cancelled once a whole message arrived (server streams).
 */
export function call(
  service: Service,
  path: string,
  body: Buffer,
  options: { tls?: SecureClientSessionOptions | undefined; contentType?: string; timeoutMs?: number; firstMessageOnly?: boolean } = {},
): Promise<CallResult> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  return new Promise((resolve) => {
    const url = `${options.tls === undefined ? "http" : "https"}://${service.grpc}`;
    const session = http2.connect(url, options.tls ?? {});
    const result: CallResult = { data: Buffer.alloc(0), timedOut: false };
    let settled = false;
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => {
      result.timedOut = true;
      finish();
    }, timeoutMs);
    session.on("error", (error: Error) => {
      result.error ??= `session: ${error.message}`;
      finish();
    });
    session.on("goaway", (code: number) => {
      result.error ??= `GOAWAY ${code}`;
    });
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": options.contentType ?? "application/grpc",
      te: "trailers",
    });
    const chunks: Buffer[] = [];
    const readStatus = (headers: http2.IncomingHttpHeaders): void => {
      if (headers[":status"] !== undefined) result.status = Number(headers[":status"]);
      if (headers["grpc-status"] !== undefined) result.grpcStatus = Number(headers["grpc-status"]);
      if (headers["grpc-message"] !== undefined) result.grpcMessage = decodeURIComponent(String(headers["grpc-message"]));
    };
    stream.on("response", readStatus);
    stream.on("trailers", readStatus);
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      result.data = Buffer.concat(chunks);
      if (options.firstMessageOnly === true && result.data.length >= 5 && result.data.length >= 5 + result.data.readUInt32BE(1)) finish();
    });
    stream.on("error", (error: Error) => {
      result.error ??= `stream: ${error.message}`;
    });
    stream.on("close", () => {
      if (stream.rstCode !== undefined && stream.rstCode !== 0) result.error ??= `RST_STREAM ${stream.rstCode}`;
      finish();
    });
    stream.end(body);
  });
}

/** Whether `body` decodes as the request message of the method at `path` (a body that does not must get INVALID_ARGUMENT). */
export function decodesAsRequest(path: string, body: Uint8Array): boolean {
  const decoders: Record<string, (bytes: Uint8Array) => unknown> = {
    [CERTIFY]: (b) => CertifyRequest.decode(b),
    [GET]: (b) => GetDestination.decode(b),
    [GET_PROFILE]: (b) => GetDestination.decode(b),
    [GET_PORT]: (b) => PortSpec.decode(b),
    [WATCH_PORT]: (b) => PortSpec.decode(b),
  };
  const decode = decoders[path];
  if (decode === undefined) throw new Error(`no request decoder for ${path}`);
  try {
    decode(body);
    return true;
  } catch {
    return false;
  }
}

/** A gRPC refusal as the table shows it. */
export function describeCall(result: CallResult): string {
  if (result.grpcStatus !== undefined) return `grpc-status ${result.grpcStatus}${result.grpcMessage === undefined ? "" : ` (${result.grpcMessage.slice(0, 50)})`}`;
  if (result.error !== undefined) return result.error;
  if (result.timedOut) return "no answer before the deadline";
  return `HTTP ${String(result.status)}`;
}

/** Refused: an error status, a reset, or a non-200 response; never an OK answer or silence. */
export function refusedCall(result: CallResult): boolean {
  if (result.timedOut) return false;
  if (result.grpcStatus !== undefined) return result.grpcStatus !== 0;
  return result.error !== undefined || (result.status !== undefined && result.status !== 200);
}

/** A real Certify for ServiceAccount `sa`: true when a leaf comes back. */
export async function certifyWorks(service: Service, material: Material, sa = "web"): Promise<boolean> {
  const identity = `${sa}.default.serviceaccount.identity.meshtls.cluster.local`;
  const request = CertifyRequest.encode({
    identity,
    token: Buffer.from(await material.token(sa)),
    certificateSigningRequest: Buffer.from(await material.csr(identity)),
  }).finish();
  const result = await call(service, CERTIFY, grpcMessage(Buffer.from(request)), { tls: tlsOptions(service, material) });
  if (result.grpcStatus !== 0 || result.data.length < 5) return false;
  return CertifyResponse.decode(result.data.subarray(5)).leafCertificate.length > 0;
}

/** A real Get: true when the first update arrives. */
export async function getWorks(service: Service, material: Material, clientLeaf: { keyPem: string; chainPem: string }, path = "b.default.svc.cluster.local:80"): Promise<boolean> {
  const request = GetDestination.encode({ scheme: "k8s", path, contextToken: '{"ns":"default"}' }).finish();
  const result = await call(service, GET, grpcMessage(Buffer.from(request)), { tls: tlsOptions(service, material, clientLeaf), firstMessageOnly: true });
  return result.data.length >= 5 && result.grpcStatus === undefined;
}

/** A real GetProfile: true when the first profile arrives. */
export async function profileWorks(service: Service, material: Material, clientLeaf: { keyPem: string; chainPem: string }, path = "b.default.svc.cluster.local:80"): Promise<boolean> {
  const request = GetDestination.encode({ scheme: "k8s", path, contextToken: '{"ns":"default"}' }).finish();
  const result = await call(service, GET_PROFILE, grpcMessage(Buffer.from(request)), { tls: tlsOptions(service, material, clientLeaf), firstMessageOnly: true });
  return result.data.length >= 5 && result.grpcStatus === undefined;
}

/** A real WatchPort on the policy API (`service.policy`): true when the port's first `Server` arrives. */
export async function watchPortWorks(service: Service, material: Material, clientLeaf: { keyPem: string; chainPem: string }, spec: PortSpec): Promise<boolean> {
  if (service.policy === undefined) return false;
  const request = PortSpec.encode(spec).finish();
  const policy = { ...service, grpc: service.policy };
  const result = await call(policy, WATCH_PORT, grpcMessage(Buffer.from(request)), { tls: tlsOptions(policy, material, clientLeaf), firstMessageOnly: true });
  return result.data.length >= 5 && result.grpcStatus === undefined;
}
