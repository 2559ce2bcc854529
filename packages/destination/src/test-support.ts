import { Server, ServerCredentials } from "@grpc/grpc-js";
import { createDestinationServer, type DestinationServerOptions, type DestinationServerHandle } from "./server.js";

/** Starts a real grpc-js server with the destination service on 127.0.0.1 (port 0 unless given). */
export async function startServer(
  options: DestinationServerOptions,
  port = 0,
): Promise<{ handle: DestinationServerHandle; address: string; port: number; stop(): Promise<void> }> {
  const server = new Server();
  const handle = createDestinationServer(options);
  server.addService(handle.definition, handle.implementation);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  return {
    handle,
    address: `127.0.0.1:${bound}`,
    port: bound,
    stop: async () => {
      handle.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}

/** Polls `check` every 10 ms until it returns true, failing after `timeoutMs`. */
export async function eventually(check: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
