import { status } from "@grpc/grpc-js";
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from "@grpc/grpc-js";

/** What a wrapped deserializer returns instead of throwing; the wrapped handler refuses it before the service's own handler runs. */
class MalformedRequest {
  constructor(readonly details: string) {}
}

/** Options of {@link refuseMalformedRequests}. */
export interface RefuseMalformedRequestsOptions {
  /** Called for each refused request (to log or count it), with the method's path and the status details sent. */
  onMalformed?: (path: string, details: string) => void;
}

/** Longest decoder reason quoted in the status details. */
const MAX_REASON_CHARS = 100;

/**
 * Wraps a grpc-js service (definition and implementation, to be added
 * together) so that a request message whose bytes do not decode is answered
 * INVALID_ARGUMENT "the <Method> request is not a valid protobuf message
 * (<reason>)": grpc-js answers a deserializer that throws with INTERNAL, a
 * server error, though the client sent the bad bytes. The service's handlers
 * never see such a request.
 *
 * Only methods with one request message (unary and server streaming) are
 * wrapped; a client-streaming method keeps grpc-js's answer.
 */
export function refuseMalformedRequests<D extends ServiceDefinition, I extends UntypedServiceImplementation>(
  definition: D,
  implementation: I,
  options: RefuseMalformedRequestsOptions = {},
): { definition: D; implementation: I } {
  const wrappedDefinition: Record<string, unknown> = { ...definition };
  const wrappedImplementation: Record<string, unknown> = { ...implementation };
  for (const [name, method] of Object.entries(definition)) {
    const handler = implementation[name];
    if (method.requestStream || typeof handler !== "function") continue;
    const rpc = method.path.slice(method.path.lastIndexOf("/") + 1);
    const decode = method.requestDeserialize;
    wrappedDefinition[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error);
          return new MalformedRequest(`the ${rpc} request is not a valid protobuf message (${reason.slice(0, MAX_REASON_CHARS)})`);
        }
      },
    };
    const refused = (request: unknown): string | undefined => {
      if (!(request instanceof MalformedRequest)) return undefined;
      options.onMalformed?.(method.path, request.details);
      return request.details;
    };
    wrappedImplementation[name] = method.responseStream
      ? (call: ServerWritableStream<unknown, unknown>): void => {
          const details = refused(call.request);
          if (details === undefined) return void (handler as (call: ServerWritableStream<unknown, unknown>) => void)(call);
          call.emit("error", { code: status.INVALID_ARGUMENT, details });
        }
      : (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>): void => {
          const details = refused(call.request);
          if (details === undefined) return void (handler as (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void)(call, callback);
          callback({ code: status.INVALID_ARGUMENT, details });
        };
  }
  return { definition: wrappedDefinition as D, implementation: wrappedImplementation as I };
}
