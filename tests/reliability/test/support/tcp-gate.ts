// A loopback TCP forwarder in front of a server, shut and reopened on the same port: while shut, its clients
// see what they would see if the server process were gone (every connection reset, new ones refused).
import net from "node:net";

export interface TcpGate {
  /** `127.0.0.1:port`, the same across shut and open. */
  readonly address: string;
  /** Stops listening and destroys every forwarded connection. */
  shut(): Promise<void>;
  /** Listens again on the same port. */
  open(): Promise<void>;
  close(): Promise<void>;
}

/** Forwards 127.0.0.1:<free port> to `target` (`host:port`). */
export async function startTcpGate(target: string): Promise<TcpGate> {
  const host = target.slice(0, target.lastIndexOf(":"));
  const port = Number(target.slice(target.lastIndexOf(":") + 1));
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  let server = createServer();

  function createServer(): net.Server {
    return net.createServer((client) => {
      const upstream = net.connect({ host, port });
      track(client);
      track(upstream);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
  }

  const listen = (on: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(on, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
    });
  const bound = await listen(0);

  async function shut(): Promise<void> {
    if (!server.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  }

  return {
    address: `127.0.0.1:${bound}`,
    shut,
    async open() {
      if (server.listening) return;
      server = createServer();
      await listen(bound);
    },
    close: shut,
  };
}
