import net from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { forwardStreams, idleSweeps } from "./forward.js";

/** Scheduling on a loaded machine, on top of an upper bound. */
const SLACK_MS = 400;
/** A timer may fire a little before the wall clock says (libuv's cached loop time). */
const EARLY_MS = 5;

interface Client extends net.Socket {
  /** When the forwarder started watching the pair (just before `forwardStreams`). */
  watchedAt: number;
  closedAt: Promise<number>;
  received: () => number;
}

interface Forwarder {
  /** Opens a connection through the forwarder, resolved once its pair is forwarded. */
  open: () => Promise<Client>;
  close: () => void;
}

const forwarders: Forwarder[] = [];
afterAll(() => {
  for (const forwarder of forwarders) forwarder.close();
});

/** A loopback echo server behind a listener that joins each connection to it with `forwardStreams`. */
async function startForwarder(idleTimeoutMs: number): Promise<Forwarder> {
  const echo = net.createServer((s) => s.on("error", () => undefined).pipe(s));
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  const echoPort = (echo.address() as net.AddressInfo).port;
  // Keyed by the client's port: connections opened together may be accepted in any order.
  const forwarded = new Map<number, { at: Promise<number>; resolve: (at: number) => void }>();
  const forwardedAt = (port: number) => {
    let entry = forwarded.get(port);
    if (entry === undefined) {
      let resolve: (at: number) => void = () => undefined;
      const at = new Promise<number>((r) => (resolve = r));
      entry = { at, resolve };
      forwarded.set(port, entry);
    }
    return entry;
  };
  const front = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    client.on("error", () => undefined);
    const upstream = net.connect({ host: "127.0.0.1", port: echoPort, allowHalfOpen: true }, () => {
      forwardedAt(client.remotePort ?? 0).resolve(Date.now());
      forwardStreams(client, upstream, { idleTimeoutMs });
    });
  });
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  const frontPort = (front.address() as net.AddressInfo).port;
  const forwarder: Forwarder = {
    open: async () => {
      const socket = net.connect(frontPort, "127.0.0.1");
      socket.on("error", () => undefined);
      const closedAt = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
      await new Promise((r) => socket.once("connect", r));
      let received = 0;
      socket.on("data", (chunk: Buffer) => (received += chunk.length));
      const watchedAt = await forwardedAt(socket.localPort ?? 0).at;
      return Object.assign(socket, { watchedAt, closedAt, received: () => received });
    },
    close: () => {
      front.close();
      echo.close();
    },
  };
  forwarders.push(forwarder);
  return forwarder;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sweepOf = (idleTimeoutMs: number) => idleSweeps().find((s) => s.idleTimeoutMs === idleTimeoutMs);

/** Writes a byte every quarter timeout for three timeouts; returns when the last went out. */
async function keepBusy(socket: Client, idleTimeoutMs: number): Promise<number> {
  let lastWrite = Date.now();
  for (let i = 0; i < 12; i++) {
    socket.write("x");
    lastWrite = Date.now();
    await sleep(idleTimeoutMs / 4);
  }
  return lastWrite;
}

describe("forwardStreams", () => {
  it("copies both ways and closes a pair idle for the timeout: not before 1× after its last byte, by 1.25× (plus scheduling)", async () => {
    const IDLE_MS = 200;
    const forwarder = await startForwarder(IDLE_MS);
    const socket = await forwarder.open();
    socket.write("hello");
    // The forwarder reads the byte after this, so its last byte is no earlier.
    const lastWrite = Date.now();
    await sleep(50);
    expect(socket.received()).toBe(5);
    const closedAt = await socket.closedAt;
    expect(closedAt - lastWrite).toBeGreaterThanOrEqual(IDLE_MS - EARLY_MS);
    expect(closedAt - lastWrite).toBeLessThan(IDLE_MS * 1.25 + SLACK_MS);
  });

  it("keeps a pair that moves bytes open past the timeout, then closes it once it goes quiet", async () => {
    const IDLE_MS = 200;
    const forwarder = await startForwarder(IDLE_MS);
    const socket = await forwarder.open();
    let closed = false;
    void socket.closedAt.then(() => (closed = true));
    const lastWrite = await keepBusy(socket, IDLE_MS);
    expect(closed).toBe(false);
    expect(socket.received()).toBe(12);
    const closedAt = await socket.closedAt;
    expect(closedAt - lastWrite).toBeGreaterThanOrEqual(IDLE_MS - EARLY_MS);
    expect(closedAt - lastWrite).toBeLessThan(IDLE_MS * 1.25 + SLACK_MS);
  });

  it("never closes an idle pair with idleTimeoutMs 0, and watches it with no sweep", async () => {
    const forwarder = await startForwarder(0);
    const socket = await forwarder.open();
    await sleep(600);
    expect(socket.destroyed).toBe(false);
    expect(sweepOf(0)).toBeUndefined();
    socket.write("still here");
    await sleep(50);
    expect(socket.received()).toBe(10);
    socket.destroy();
  });
});

describe("the shared idle sweep: one interval per idle timeout for every forwarded pair", () => {
  it("serves many pairs with one sweep: closes each idle one within its bounds, keeps a busy one, and stops once none is left", async () => {
    const IDLE_MS = 300;
    const PAIRS = 20;
    const forwarder = await startForwarder(IDLE_MS);
    const sweepsBefore = idleSweeps().length;
    const quiet = await Promise.all(Array.from({ length: PAIRS - 1 }, () => forwarder.open()));
    await sleep(30);
    // Joined at another point of the interval than the quiet ones.
    const busy = await forwarder.open();
    expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: PAIRS, running: true });
    expect(idleSweeps().length).toBe(sweepsBefore + 1);
    let busyClosed = false;
    void busy.closedAt.then(() => (busyClosed = true));
    const lastWrite = await keepBusy(busy, IDLE_MS);
    // The quiet pairs (never a byte) went within their bounds while the busy one stayed.
    for (const socket of quiet) {
      const closedAt = await socket.closedAt;
      expect(closedAt - socket.watchedAt).toBeGreaterThanOrEqual(IDLE_MS - EARLY_MS);
      expect(closedAt - socket.watchedAt).toBeLessThan(IDLE_MS * 1.25 + SLACK_MS);
    }
    expect(busyClosed).toBe(false);
    expect(sweepOf(IDLE_MS)?.pairs).toBe(1);
    const busyClosedAt = await busy.closedAt;
    expect(busyClosedAt - lastWrite).toBeGreaterThanOrEqual(IDLE_MS - EARLY_MS);
    expect(busyClosedAt - lastWrite).toBeLessThan(IDLE_MS * 1.25 + SLACK_MS);
    await sleep(50);
    expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: 0, running: false });
  });

  it("keeps two timeouts apart: each pair closes by its own", async () => {
    const SHORT_MS = 250;
    const LONG_MS = 750;
    const short = await (await startForwarder(SHORT_MS)).open();
    const long = await (await startForwarder(LONG_MS)).open();
    expect(sweepOf(SHORT_MS)?.pairs).toBe(1);
    expect(sweepOf(LONG_MS)?.pairs).toBe(1);
    const shortClosedAt = await short.closedAt;
    expect(shortClosedAt - short.watchedAt).toBeGreaterThanOrEqual(SHORT_MS - EARLY_MS);
    expect(shortClosedAt - short.watchedAt).toBeLessThan(SHORT_MS * 1.25 + SLACK_MS);
    expect(long.destroyed).toBe(false);
    const longClosedAt = await long.closedAt;
    expect(longClosedAt - long.watchedAt).toBeGreaterThanOrEqual(LONG_MS - EARLY_MS);
    expect(longClosedAt - long.watchedAt).toBeLessThan(LONG_MS * 1.25 + SLACK_MS);
  });

  it("forgets a pair that closed by itself (none left behind) and stops its interval once none is watched", async () => {
    const IDLE_MS = 2000;
    const forwarder = await startForwarder(IDLE_MS);
    const sockets = await Promise.all([forwarder.open(), forwarder.open(), forwarder.open()]);
    expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: 3, running: true });
    sockets[0]?.end();
    sockets[1]?.destroy();
    await Promise.all([sockets[0]?.closedAt, sockets[1]?.closedAt]);
    await sleep(50);
    expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: 1, running: true });
    sockets[2]?.end();
    await sockets[2]?.closedAt;
    await sleep(50);
    expect(sweepOf(IDLE_MS)?.pairs).toBe(0);
    // The interval stops at its next check with nothing to watch (a quarter timeout at most).
    await sleep(IDLE_MS / 4 + 100);
    expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: 0, running: false });
  });

  it("checks a timeout longer than a timer takes (200 days) at its pace, not every millisecond", async () => {
    const IDLE_MS = 200 * 86_400_000;
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning.name);
    process.on("warning", onWarning);
    try {
      const socket = await (await startForwarder(IDLE_MS)).open();
      await sleep(200);
      // A timer beyond 2^31-1 ms runs every millisecond, and four quiet checks would have closed the pair by now.
      expect(socket.destroyed).toBe(false);
      expect(warnings).not.toContain("TimeoutOverflowWarning");
      expect(sweepOf(IDLE_MS)).toEqual({ idleTimeoutMs: IDLE_MS, pairs: 1, running: true });
      socket.destroy();
    } finally {
      process.off("warning", onWarning);
    }
  });
});
