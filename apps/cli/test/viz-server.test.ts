import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startViz, VIZ_FIRST_REQUEST_TIMEOUT_MS, type Viz } from "../src/mesh/viz-server.ts";

/** Connects and, unless `request` is given, never sends a byte; resolves with how long the server took to close it (undefined: still open at `waitMs`). */
function closedAfter(address: string, waitMs: number, request?: string): Promise<number | undefined> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect({ host, port }, () => {
      if (request !== undefined) socket.write(request);
    });
    socket.on("data", () => undefined);
    socket.on("error", () => undefined);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, waitMs);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

describe("meshtls viz's server: connections that never send a request", () => {
  let viz: Viz;

  beforeAll(async () => {
    // No proxy answers there: the view shows the error and keeps serving.
    viz = await startViz({ listen: "127.0.0.1:0", admins: ["127.0.0.1:9"], registry: [], intervalMs: 60_000, timeoutMs: 500 });
  });
  afterAll(() => viz?.close());

  it("refuses a listen address that is not loopback (runtime's isLoopback)", async () => {
    await expect(startViz({ listen: "0.0.0.0:0", admins: [], registry: [], intervalMs: 1000 })).rejects.toMatchObject({ code: "ERR_USAGE" });
  });

  it(`closes a connection idle before its first request within ${VIZ_FIRST_REQUEST_TIMEOUT_MS / 1000} s; a viewer's event stream stays open past it`, async () => {
    const viewer = closedAfter(viz.address, VIZ_FIRST_REQUEST_TIMEOUT_MS + 5000, "GET /api/events HTTP/1.1\r\nHost: viz\r\n\r\n");
    const idle = await closedAfter(viz.address, VIZ_FIRST_REQUEST_TIMEOUT_MS + 5000);
    expect(idle).toBeDefined();
    expect(idle!).toBeGreaterThanOrEqual(VIZ_FIRST_REQUEST_TIMEOUT_MS - 500);
    expect(idle!).toBeLessThan(VIZ_FIRST_REQUEST_TIMEOUT_MS + 5000);
    expect(await viewer).toBeUndefined();
  }, 30_000);
});
