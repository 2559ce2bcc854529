import { Metadata } from "@grpc/grpc-js";
import type { ChannelOptions, ServerUnaryCall, sendUnaryData, ServiceError } from "@grpc/grpc-js";
import { dateToTimestamp, IdentityService } from "@meshtls/api";
import type { CertifyResponse, IdentityServer , CertifyRequest} from "@meshtls/api";
import { createCertifyHandler, MAX_CERTIFY_REQUEST_BYTES } from "./certify.ts";
import type { CertifyHandler, CertifyOptions } from "./certify.ts";
import { IdentityError } from "./errors.ts";
import { statusForCode } from "./grpc-status.ts";

export type IdentityServerOptions = CertifyOptions;

/** What `server.addService(identity.service, identity.implementation)` needs, plus the channel options to build the server with. */
export interface IdentityServerParts {
  /** The `io.linkerd.proxy.identity.Identity` service definition. */
  service: typeof IdentityService;
  implementation: IdentityServer;
  /** Pass to `new grpc.Server(...)`: caps received messages at the request limit, turns channelz off. */
  serverOptions: ChannelOptions;
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
      certify(call.request, { signal: controller.signal }).then(
        (output) => {
          answered = true;
          callback(null, {
            leafCertificate: bufferView(output.leaf),
            intermediateCertificates: output.intermediates.map(bufferView),
            validUntil: dateToTimestamp(output.validUntil),
          });
        },
        (error: unknown) => {
          answered = true;
          callback(toServiceError(error));
        },
      );
    },
  };
  return {
    service: IdentityService,
    implementation,
    serverOptions: {
      // A little headroom for protobuf framing: the handler enforces the exact limit with its own message.
      "grpc.max_receive_message_length": maxRequestBytes + 64,
      // channelz keeps per-call statistics for an introspection service this server does not expose.
      "grpc.enable_channelz": 0,
    },
    certify,
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
