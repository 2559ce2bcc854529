import type net from "node:net";
import type { HostPort } from "./address.js";
import { formatHostPort } from "./address.js";
import { ProxyError } from "./errors.js";
import type { Logger } from "./logger.js";

/**
 * Binds `server` to `address`, resolving with the bound address. Later
 * failures to accept (EMFILE) are logged as `<what>: accept failed` and the
 * listener keeps serving.
 * @throws ProxyError `ERR_LISTEN_FAILED` when it cannot bind (`<what> cannot listen on host:port`)
 */
export function listenOn(server: net.Server, address: HostPort, what: string, logger: Logger): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (cause: Error): void => reject(new ProxyError("ERR_LISTEN_FAILED", `${what} cannot listen on ${formatHostPort(address.host, address.port)}: ${cause.message}`, { cause }));
    server.once("error", onError);
    server.listen(address.port, address.host, () => {
      server.off("error", onError);
      server.on("error", (cause) => logger.error({ code: "ERR_LISTEN_FAILED", err: cause.message }, `${what}: accept failed`));
      resolve(server.address() as net.AddressInfo);
    });
  });
}
