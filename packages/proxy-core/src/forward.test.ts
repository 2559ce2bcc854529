import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createIdleSweep, forwardStreams } from "./forward.js";

describe("forwardStreams", () => {
  let echo: net.Server;
  let front: net.Server;
  let frontPort: number;
  const IDLE_MS = 200;

  beforeAll(async () => {
    echo = net.createServer((s) => s.on("error", () => undefined).pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    const echoPort = (echo.address() as net.AddressInfo).port;
    front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
      const upstream = net.connect({ host: "127.0.0.1", port: echoPort, allowHalfOpen: true }, () => forwardStreams(client, upstream, { idleTimeoutMs: IDLE_MS }));
    });
    await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
    frontPort = (front.address() as net.AddressInfo).port;
  });

  afterAll(() => {
    front.close();
    echo.close();
  });

  const open = async (): Promise<net.Socket & { closedAt: Promise<number>; received: () => number }> => {
    const socket = net.connect(frontPort, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    let received = 0;
    socket.on("data", (chunk: Buffer) => (received += chunk.length));
    socket.on("error", () => undefined);
    const closedAt = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
    return Object.assign(socket, { closedAt, received: () => received });
  };

  it("copies both ways and closes a connection idle for the timeout (within 1.25× of it plus scheduling)", async () => {
    const socket = await open();
    socket.write("hello");
    await new Promise((r) => setTimeout(r, 50));
    expect(socket.received()).toBe(5);
    const lastByte = Date.now();
    const closedAt = await socket.closedAt;
    expect(closedAt - lastByte).toBeGreaterThanOrEqual(IDLE_MS * 0.75);
    expect(closedAt - lastByte).toBeLessThan(IDLE_MS * 1.25 + 400);
  });

  it("keeps a connection with traffic open past the timeout, then closes it once it goes quiet", async () => {
    const socket = await open();
    const started = Date.now();
    let closedEarly = false;
    void socket.closedAt.then(() => (closedEarly = Date.now() - started < 3 * IDLE_MS));
    for (let i = 0; i < 12; i++) {
      socket.write("x");
      await new Promise((r) => setTimeout(r, IDLE_MS / 4));
    }
    expect(closedEarly).toBe(false);
    expect(socket.destroyed).toBe(false);
    expect(socket.received()).toBe(12);
    const quietFrom = Date.now();
    expect((await socket.closedAt) - quietFrom).toBeLessThan(IDLE_MS * 1.25 + 400);
  });
});

describe("createIdleSweep: one interval for every forwarded pair", () => {
  let echo: net.Server;
  let front: net.Server;
  let frontPort: number;
  const IDLE_MS = 200;
  const sweep = createIdleSweep(IDLE_MS);

  beforeAll(async () => {
    echo = net.createServer((s) => s.on("error", () => undefined).pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    const echoPort = (echo.address() as net.AddressInfo).port;
    front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
      const upstream = net.connect({ host: "127.0.0.1", port: echoPort, allowHalfOpen: true }, () => forwardStreams(client, upstream, { idleSweep: sweep }));
    });
    await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
    frontPort = (front.address() as net.AddressInfo).port;
  });

  afterAll(() => {
    front.close();
    echo.close();
  });

  const open = async (): Promise<net.Socket & { closedAt: Promise<number> }> => {
    const socket = net.connect(frontPort, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.on("error", () => undefined);
    socket.resume();
    const closedAt = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
    return Object.assign(socket, { closedAt });
  };

  it("closes each idle pair between 1 and 1.25 timeouts after its last byte (plus scheduling), keeps a busy one, and stops once none is left", async () => {
    const quiet = await open();
    await new Promise((r) => setTimeout(r, 30));
    const busy = await open();
    const openedAt = Date.now();
    await new Promise((r) => setTimeout(r, 30));
    expect(sweep.size()).toBe(2);
    let busyClosed = false;
    void busy.closedAt.then(() => (busyClosed = true));
    for (let i = 0; i < 12; i++) {
      busy.write("x");
      await new Promise((r) => setTimeout(r, IDLE_MS / 4));
    }
    // The quiet pair (never a byte) went within its bounds, while the busy one, joined at another point of the interval, stayed.
    const quietClosedAt = await quiet.closedAt;
    expect(quietClosedAt - openedAt).toBeGreaterThanOrEqual(IDLE_MS * 0.95 - 30);
    expect(quietClosedAt - openedAt).toBeLessThan(IDLE_MS * 1.25 + 400);
    expect(busyClosed).toBe(false);
    const quietFrom = Date.now();
    const busyClosedAt = await busy.closedAt;
    expect(busyClosedAt - quietFrom).toBeGreaterThanOrEqual(IDLE_MS * 0.95 - 30);
    expect(busyClosedAt - quietFrom).toBeLessThan(IDLE_MS * 1.25 + 400);
    await new Promise((r) => setTimeout(r, 50));
    expect(sweep.size()).toBe(0);
  });

  it("forgets a pair that closed by itself", async () => {
    const socket = await open();
    await new Promise((r) => setTimeout(r, 30));
    expect(sweep.size()).toBe(1);
    socket.end();
    await socket.closedAt;
    await new Promise((r) => setTimeout(r, 50));
    expect(sweep.size()).toBe(0);
  });
});
