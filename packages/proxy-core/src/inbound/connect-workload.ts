import net from "node:net";
import { formatHostPort } from "../address.js";
import { ProxyError } from "../errors.js";
import type { DirectRead } from "../forward.js";
import type { OwnSockets } from "../own-sockets.js";
import type { InboundTarget, Refusal } from "./target.js";
import { refuse } from "./target.js";

/** Connects a target to its workload: the inbound's one connect seam (an original-destination listener supplies another). */
export type ConnectWorkload = (target: InboundTarget, onread?: DirectRead["onread"]) => Promise<net.Socket>;

/** A target that is one of the proxy's own listeners would loop: refused before policy. */
export function loopRefusal(target: InboundTarget, own: OwnSockets): Refusal | undefined {
  if (own.listenerAt(target.workload) === undefined) return undefined;
  return refuse("ERR_TARGET_FORBIDDEN", `${formatHostPort(target.workload.host, target.workload.port)} is one of the proxy's own listeners: refusing a loop`, "proxy_loop");
}

/**
 * Creates the connect layer: plain TCP to the workload within
 * `connectTimeoutMs`, the connection recorded as the proxy's own.
 * The returned function throws ProxyError `ERR_CONNECT_TIMEOUT`, `ERR_CONNECT_FAILED`.
 */
export function createConnectWorkload(options: { own: OwnSockets; connectTimeoutMs: number }): ConnectWorkload {
  const { own, connectTimeoutMs } = options;
  return ({ workload }, onread) =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: workload.host, port: workload.port, allowHalfOpen: true, noDelay: true, ...(onread === undefined ? {} : { onread }) });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ProxyError("ERR_CONNECT_TIMEOUT", `workload ${workload.host}:${workload.port} did not accept within ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      socket.once("error", (cause) => {
        clearTimeout(timer);
        reject(new ProxyError("ERR_CONNECT_FAILED", `workload ${workload.host}:${workload.port}: ${cause.message}`, { cause }));
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        own.trackOpened(socket, workload);
        resolve(socket);
      });
    });
}
