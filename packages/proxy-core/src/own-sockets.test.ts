import net from "node:net";
import { once } from "node:events";
import { describe, expect, it } from "vitest";
import { createOwnSockets } from "./own-sockets.js";

describe("createOwnSockets", () => {
  it("knows which addresses reach a listener: exact, wildcard, localhost and IPv4-mapped", () => {
    const own = createOwnSockets();
    own.addListener({ address: "127.0.0.1", port: 4191 }, "admin");
    own.addListener({ address: "0.0.0.0", port: 4143 }, "inbound");
    own.addListener({ address: "127.0.1.1", port: 4140 }, "outbound");
    expect(own.listenerAt({ host: "127.0.0.1", port: 4191 })).toBe("admin");
    expect(own.listenerAt({ host: "localhost", port: 4191 })).toBe("admin");
    expect(own.listenerAt({ host: "::ffff:127.0.0.1", port: 4191 })).toBe("admin");
    expect(own.listenerAt({ host: "0.0.0.0", port: 4191 })).toBe("admin");
    // 127.0.1.1 is another address: a listener on 127.0.0.1 is not reached there.
    expect(own.listenerAt({ host: "127.0.1.1", port: 4191 })).toBeUndefined();
    expect(own.listenerAt({ host: "127.0.0.1", port: 4192 })).toBeUndefined();
    // A wildcard listener is reached on every local address.
    expect(own.listenerAt({ host: "127.0.0.1", port: 4143 })).toBe("inbound");
    expect(own.listenerAt({ host: "127.9.9.9", port: 4143 })).toBe("inbound");
    expect(own.listenerAt({ host: "10.255.255.254", port: 4143 })).toBeUndefined();
    expect(own.listenerAt({ host: "127.0.1.1", port: 4140 })).toBe("outbound");
    expect(own.isListenerPort(4140)).toBe(true);
    expect(own.isListenerPort(8080)).toBe(false);
    expect(own.listenerPorts().sort()).toEqual([4140, 4143, 4191]);
  });

  it("recognises the local end of a connection it opened while open and for the grace time after, not longer", async () => {
    let clock = 1_000_000;
    const own = createOwnSockets({ graceMs: 10_000, now: () => clock });
    const server = net.createServer((s) => s.on("error", () => undefined));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const bound = server.address() as net.AddressInfo;
    const socket = net.connect(bound.port, "127.0.0.1");
    await once(socket, "connect");
    const { localAddress, localPort } = socket;
    expect(own.openedByProxy(localAddress, localPort)).toBe(false);
    own.trackOpened(socket, { host: "127.0.0.1", port: bound.port });
    expect(own.openedByProxy(localAddress, localPort)).toBe(true);
    expect(own.openedByProxy(`::ffff:${localAddress ?? ""}`, localPort)).toBe(true);
    expect(own.openedByProxy(localAddress, (localPort ?? 0) + 1)).toBe(false);
    socket.destroy();
    await once(socket, "close");
    clock += 9_000;
    expect(own.openedByProxy(localAddress, localPort)).toBe(true);
    clock += 9_000;
    expect(own.openedByProxy(localAddress, localPort)).toBe(true);
    clock += 12_000;
    expect(own.openedByProxy(localAddress, localPort)).toBe(false);
    expect(own.openedByProxy(undefined, undefined)).toBe(false);
    server.close();
  });

  it("records connections dialled by loopback or unspecified address, IPv6 literal or name, whatever their port, and none dialled to (or bound to) another IPv4 address", async () => {
    const own = createOwnSockets();
    const server = net.createServer((s) => s.on("error", () => undefined));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as net.AddressInfo;
    const opened = async (host: string, boundTo?: string): Promise<boolean> => {
      const socket = net.connect(port, "127.0.0.1");
      await once(socket, "connect");
      own.trackOpened(socket, { host, port }, boundTo);
      const recorded = own.openedByProxy(socket.localAddress, socket.localPort);
      socket.destroy();
      return recorded;
    };
    // No listener is known to `own`: the record backs up the listener checks, it does not depend on them.
    expect(await opened("127.0.0.1")).toBe(true);
    expect(await opened("localhost")).toBe(true);
    expect(await opened("admin.example")).toBe(true);
    expect(await opened("127.9.8.7")).toBe(true);
    // Spellings that reach this host from loopback without looking like 127.0.0.1.
    for (const host of ["0.0.0.0", "::", "::1", "0:0:0:0:0:0:0:1", "::ffff:7f00:1", "::ffff:127.0.0.1"]) expect(await opened(host)).toBe(true);
    // The host as dialled decides (the socket itself is on loopback here): another IPv4 address's local end never is.
    expect(await opened("10.0.0.7")).toBe(false);
    expect(await opened("192.168.1.20")).toBe(false);
    // Bound to a local address, the local end is that address whatever the destination.
    expect(await opened("10.0.0.7", "127.0.0.1")).toBe(true);
    expect(await opened("10.0.0.7", "0.0.0.0")).toBe(true);
    expect(await opened("127.0.0.1", "10.0.0.5")).toBe(false);
    server.close();
  });
});
