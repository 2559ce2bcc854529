import { status, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream, type ServiceDefinition } from "@grpc/grpc-js";
import { InboundServerPoliciesService, refuseMalformedRequests, type InboundServer, type InboundServerPoliciesServer, type PortSpec } from "@meshtls/api";
import { Counter, Gauge, type Registry } from "prom-client";
import { DestinationError } from "../errors.js";
import { noopLogger, type Logger } from "../logger.js";
import { peerOf } from "../server.js";
import { createStreamLimits } from "../stream-limits.js";
import type { InboundPolicyController, PortQuery } from "./controller.js";

export interface InboundPolicyServerOptions {
  controller: InboundPolicyController;
  /** Registry to register the server's metrics in (`policy_*`). Default: none. */
  metrics?: Registry;
  /** Most open `WatchPort` streams; more are refused with RESOURCE_EXHAUSTED. Default 100000. */
  maxStreams?: number;
  /** Of `maxStreams`, the most one peer may hold (identity on mTLS, else IP; see `peerOf`). Default 10000. */
  maxStreamsPerPeer?: number;
  /** Default: no-op. */
  logger?: Logger;
}

/** The `InboundServerPolicies` service, to add to a grpc-js `Server`. */
export interface InboundPolicyServerHandle {
  /** `server.addService(handle.definition, handle.implementation)`. */
  definition: ServiceDefinition;
  implementation: InboundServerPoliciesServer;
  /** Number of open `WatchPort` streams. */
  openStreams(): number;
  /** Ends every open stream. */
  close(): void;
}

/** gRPC status of each refusal of the controller (Linkerd's mapping). */
function statusOf(error: DestinationError): status {
  switch (error.code) {
    case "ERR_POLICY_WORKLOAD_INVALID":
    case "ERR_POLICY_PORT_INVALID":
      return status.INVALID_ARGUMENT;
    case "ERR_POLICY_UNKNOWN_SERVER":
      return status.NOT_FOUND;
    default:
      return status.INTERNAL;
  }
}

/**
 * Serves `io.linkerd.proxy.inbound.InboundServerPolicies` from an inbound
 * policy controller: `GetPort` answers once, `WatchPort` sends the port's
 * `Server` now and again on every change. A malformed workload or a port
 * outside 1..65535 is INVALID_ARGUMENT, an unknown workload NOT_FOUND
 * "unknown server" (a watched workload that leaves the model ends its stream
 * so), a failure INTERNAL; streams beyond the caps RESOURCE_EXHAUSTED.
 */
export function createInboundPolicyServer(options: InboundPolicyServerOptions): InboundPolicyServerHandle {
  const { controller } = options;
  const logger = options.logger ?? noopLogger;
  const maxStreams = options.maxStreams ?? 100_000;
  const maxStreamsPerPeer = options.maxStreamsPerPeer ?? 10_000;
  const limits = createStreamLimits({ maxStreams, maxStreamsPerPeer });
  const streams = new Set<ServerWritableStream<PortSpec, InboundServer>>();
  let closed = false;

  const metrics = options.metrics;
  const requests = metrics
    ? new Counter({ name: "policy_requests_total", help: "InboundServerPolicies calls by method (get_port, watch_port) and result.", labelNames: ["method", "result"], registers: [metrics] })
    : undefined;
  const refused = metrics
    ? new Counter({ name: "policy_watch_refused_total", help: "WatchPort streams refused for lack of room, by reason (max_streams, max_streams_per_peer).", labelNames: ["reason"], registers: [metrics] })
    : undefined;
  const updates = metrics
    ? new Counter({ name: "policy_updates_total", help: "Server messages written to WatchPort streams after the first.", registers: [metrics] })
    : undefined;
  if (metrics) new Gauge({ name: "policy_watch_streams", help: "Open WatchPort streams.", registers: [metrics], collect() { this.set(limits.open()); } });

  /** The query, or undefined after answering the call with its error. */
  function parse(method: string, request: PortSpec, fail: (code: status, details: string) => void): PortQuery | undefined {
    try {
      return controller.parsePortSpec(request);
    } catch (error) {
      if (!(error instanceof DestinationError)) throw error;
      requests?.inc({ method, result: "invalid_argument" });
      logger.debug({ method, workload: request.workload.slice(0, 200), port: request.port, reason: error.message }, "policy request refused");
      fail(statusOf(error), error.message);
      return undefined;
    }
  }

  function refuse(method: string, error: unknown, fail: (code: status, details: string) => void): void {
    if (error instanceof DestinationError) {
      const code = statusOf(error);
      requests?.inc({ method, result: code === status.NOT_FOUND ? "not_found" : "internal" });
      // Linkerd's text: the proxy keeps its default policy and retries.
      fail(code, code === status.NOT_FOUND ? "unknown server" : error.message);
      return;
    }
    requests?.inc({ method, result: "internal" });
    logger.error({ err: error, method }, "policy request failed");
    fail(status.INTERNAL, "the policy controller failed to answer");
  }

  function getPort(call: ServerUnaryCall<PortSpec, InboundServer>, callback: sendUnaryData<InboundServer>): void {
    const fail = (code: status, details: string) => callback({ code, details });
    if (closed) return fail(status.UNAVAILABLE, "the policy server is shutting down");
    const query = parse("get_port", call.request, fail);
    if (query === undefined) return;
    let server: InboundServer;
    try {
      server = controller.getPort(query);
    } catch (error) {
      refuse("get_port", error, fail);
      return;
    }
    requests?.inc({ method: "get_port", result: "ok" });
    callback(null, server);
  }

  function watchPort(call: ServerWritableStream<PortSpec, InboundServer>): void {
    const fail = (code: status, details: string) => void call.emit("error", { code, details });
    if (closed) return fail(status.UNAVAILABLE, "the policy server is shutting down");
    const query = parse("watch_port", call.request, fail);
    if (query === undefined) return;
    const peer = peerOf(call);
    const slot = limits.acquire(peer);
    if (!slot.ok) {
      requests?.inc({ method: "watch_port", result: "resource_exhausted" });
      refused?.inc({ reason: slot.reason });
      if (slot.reason === "max_streams_per_peer") logger.warn({ peer, maxStreamsPerPeer }, "WatchPort refused: the peer holds its share of streams");
      fail(
        status.RESOURCE_EXHAUSTED,
        slot.reason === "max_streams"
          ? `the server holds its maximum of ${maxStreams} streams; retry later`
          : `this client (${peer}) holds its maximum of ${maxStreamsPerPeer} streams; close some or retry later`,
      );
      return;
    }
    let unwatch: (() => void) | undefined;
    let first = true;
    const finish = (): void => {
      unwatch?.();
      slot.release();
      streams.delete(call);
    };
    try {
      unwatch = controller.watchPort(
        query,
        (server) => {
          if (!first) updates?.inc();
          first = false;
          call.write(server);
        },
        () => {
          finish();
          fail(status.NOT_FOUND, "unknown server");
        },
      );
    } catch (error) {
      slot.release();
      refuse("watch_port", error, fail);
      return;
    }
    requests?.inc({ method: "watch_port", result: "ok" });
    streams.add(call);
    for (const event of ["cancelled", "close", "finish", "error"]) call.on(event, finish);
    logger.debug({ workload: query.workload, port: query.port, peer }, "WatchPort stream opened");
  }

  const implementation: InboundServerPoliciesServer = {
    getPort(call, callback) {
      try {
        getPort(call, callback);
      } catch (error) {
        logger.error({ err: error }, "GetPort failed");
        callback({ code: status.INTERNAL, details: "the policy controller failed to answer" });
      }
    },
    watchPort(call) {
      try {
        watchPort(call);
      } catch (error) {
        // Never out of the handler: grpc-js would answer UNKNOWN, but a listener of ours could not.
        logger.error({ err: error }, "WatchPort failed");
        call.emit("error", { code: status.INTERNAL, details: "the policy controller failed to answer" });
      }
    },
  };

  // Bytes that are not a PortSpec are the client's error: INVALID_ARGUMENT, not grpc-js's INTERNAL.
  const served = refuseMalformedRequests(InboundServerPoliciesService, implementation, {
    onMalformed: (path, details) => {
      requests?.inc({ method: path.endsWith("/WatchPort") ? "watch_port" : "get_port", result: "invalid_argument" });
      logger.debug({ path, reason: details }, "malformed request refused");
    },
  });
  return {
    definition: served.definition,
    implementation: served.implementation,
    openStreams: () => limits.open(),
    close() {
      if (closed) return;
      closed = true;
      for (const stream of [...streams]) stream.end();
    },
  };
}
