import { Metadata } from "@grpc/grpc-js";
import type { ServerOptions, ServerUnaryCall, sendUnaryData, ServiceError } from "@grpc/grpc-js";
import { dateToTimestamp, IdentityService, refuseMalformedRequests } from "@meshtls/api";
import type { CertifyResponse, IdentityServer , CertifyRequest} from "@meshtls/api";
import { createCertifyHandler, MAX_CERTIFY_REQUEST_BYTES } from "./certify.ts";
import type { CertifyHandler, CertifyOptions } from "./certify.ts";
import { IdentityError } from "./errors.ts";
import { statusForCode } from "./grpc-status.ts";
import { createCertifyLimitsInterceptor, resolveCertifyLimits } from "./server-limits.ts";
import type { CertifyLimits } from "./server-limits.ts";

export interface IdentityServerOptions extends CertifyOptions {
  /** Per-connection, per-call and per-peer bounds (see `CERTIFY_LIMITS` for the defaults). */
  limits?: CertifyLimits;
}

/** What `server.addService(identity.service, identity.implementation)` needs, plus the channel options to build the server with. */
export interface IdentityServerParts {
  /** The `io.linkerd.proxy.identity.Identity` service definition. */
  service: typeof IdentityService;
  implementation: IdentityServer;
  /**
   * Pass to `new grpc.Server(...)`: caps received messages at the request limit, streams per
   * connection, connection idle time and age, and (by an interceptor) calls in progress, per peer
   * and in time; turns channelz off. The time bounds on connections themselves (TLS and HTTP/2 handshake, an
   * unanswered PING, as from a client trickling its HEADERS) come from `limitGrpcConnections` of
   * `@meshtls/runtime`, applied to that server.
   */
  serverOptions: ServerOptions;
  /** Certify calls in progress (counted from their headers). */
  calls(): number;
  /** The protocol-free handler behind the RPC. */
  certify: CertifyHandler;
}

/**
 * Creates the Identity gRPC service: the Certify handler composed from the
 * issuer store, token validator and naming policy, with IdentityError codes
 * mapped to gRPC status codes here and nowhere else.
 */
export function createIdentityServer(options: IdentityServerOptions): IdentityServerParts {
  const certify = createCertifyHandler(options);
  const limits = resolveCertifyLimits(options.limits);
  const limiter = createCertifyLimitsInterceptor(limits, options.metricsRegistry);
  const maxRequestBytes = options.maxRequestBytes ?? MAX_CERTIFY_REQUEST_BYTES;
  const implementation: IdentityServer = {
    certify(call: ServerUnaryCall<CertifyRequest, CertifyResponse>, callback: sendUnaryData<CertifyResponse>) {
      const controller = new AbortController();
      let answered = false;
      // grpc-js emits "cancelled" when every call's stream closes, answered or not; aborting after the answer
      // would only build a DOMException per call.
      call.once("cancelled", () => {
        if (!answered) controller.abort();
      });
      // Every path ends in exactly one callback; nothing is left to reject unhandled (it would stop the process).
      certify(call.request, { signal: controller.signal })
        .then((output): CertifyResponse => ({
          leafCertificate: bufferView(output.leaf),
          intermediateCertificates: output.intermediates.map(bufferView),
          validUntil: dateToTimestamp(output.validUntil),
        }))
        .then(
          (response) => {
            answered = true;
            callback(null, response);
          },
          (error: unknown) => {
            answered = true;
            callback(toServiceError(error));
          },
        )
        .catch(() => undefined);
    },
  };
  // A request that is not a CertifyRequest is the client's error: INVALID_ARGUMENT, not grpc-js's INTERNAL.
  const served = refuseMalformedRequests(IdentityService, implementation);
  return {
    service: served.definition,
    implementation: served.implementation,
    serverOptions: {
      // A little headroom for protobuf framing: the handler enforces the exact limit with its own message.
      "grpc.max_receive_message_length": maxRequestBytes + 64,
      "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
      "grpc.max_connection_idle_ms": limits.maxConnectionIdleMs,
      "grpc.max_connection_age_ms": limits.maxConnectionAgeMs,
      "grpc.max_connection_age_grace_ms": limits.maxConnectionAgeGraceMs,
      interceptors: [limiter.interceptor],
      // channelz keeps per-call statistics for an introspection service this server does not expose.
      "grpc.enable_channelz": 0,
    },
    certify,
    calls: limiter.calls,
  };
}

/** A Buffer over the same bytes (the response is encoded once, right away; nothing is copied). */
function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function toServiceError(error: unknown): Partial<ServiceError> {
  const failure = IdentityError.from(error, "ERR_ISSUE_FAILED");
  const metadata = new Metadata();
  metadata.set("meshtls-error-code", failure.code);
  return { code: statusForCode(failure.code), details: failure.message, metadata };
}
