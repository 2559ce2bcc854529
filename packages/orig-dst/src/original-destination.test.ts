import { createServer, connect } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { createOriginalDestinationReader, OrigDstError, originalDestination } from "./index.ts";

/** One loopback connection in this (un-redirected) namespace; `use` runs on the accepted socket. */
async function withAccepted<T>(use: (socket: Socket) => T | Promise<T>): Promise<T> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen({ host: "127.0.0.1", port: 0 }, resolve));
  const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const client = connect({ host: "127.0.0.1", port: (server.address() as AddressInfo).port });
  try {
    return await use(await accepted);
  } finally {
    client.destroy();
    server.close();
  }
}

describe("originalDestination", () => {
  it("loads on Linux (the addon is built at install)", () => {
    expect(process.platform).toBe("linux");
    expect(() => createOriginalDestinationReader()).not.toThrow();
  });

  it("treats a connection no rule redirected as direct: its own address, or none without conntrack", async () => {
    const result = await withAccepted((socket) => ({ found: originalDestination(socket), port: socket.localPort }));
    if (result.found !== undefined) {
      expect(result.found).toEqual({ address: "127.0.0.1", port: result.port, family: 4, redirected: false });
    }
  });

  it("refuses a closed socket with ERR_ORIG_DST_SOCKET", async () => {
    const reader = createOriginalDestinationReader();
    const error = await withAccepted(async (socket) => {
      socket.destroy();
      await new Promise((resolve) => socket.once("close", resolve));
      try {
        reader.read(socket);
        return undefined;
      } catch (caught) {
        return caught;
      }
    });
    expect(error).toBeInstanceOf(OrigDstError);
    expect((error as OrigDstError).code).toBe("ERR_ORIG_DST_SOCKET");
  });
});
