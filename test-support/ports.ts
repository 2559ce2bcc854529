import net from "node:net";

// Ports for process tests that must name a port before the process that binds it starts.

const handedOut = new Set<number>();

/**
 * A port free right now on `host` (bound and released), never one this process
 * handed out before: two ports asked for before either is bound (a proxy's
 * inbound and outbound) would otherwise be the same port now and then.
 * Prefer port 0 and reading the bound address back wherever a process reports it.
 */
export async function freePort(host: string): Promise<number> {
  for (;;) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise((resolve) => server.close(resolve));
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}
