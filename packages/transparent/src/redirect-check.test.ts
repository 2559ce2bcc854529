import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { dialProbe } from "./probe-dialer.ts";
import { createRedirectCheck } from "./redirect-check.ts";
import type { ProbeDialer, RedirectCheck } from "./redirect-check.ts";

const PROBE = { host: "10.77.9.99", port: 20001 };
const closers: (() => void)[] = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

/**
 * A stand-in for the transparent outbound listener on loopback: every
 * connection it accepts "was redirected" from `originalDestination`; what the
 * check does not take is answered "forwarded" (where the proxy would forward it).
 */
async function outboundListener(ref: { check?: RedirectCheck }, originalDestination = PROBE): Promise<number> {
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    if (ref.check?.intercept(socket, originalDestination) !== true) socket.end("forwarded\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** Dials `port` on loopback instead of the probe address: the redirect, in place. */
const dialTo =
  (port: number, send?: (token: string) => string): ProbeDialer =>
  (_probe, token, timeoutMs) =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write(`${send === undefined ? token : send(token)}\n`));
      socket.setTimeout(timeoutMs, () => socket.destroy(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" })));
      socket.once("data", () => (socket.destroy(), resolve()));
      socket.on("error", reject);
    });

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("createRedirectCheck", () => {
  it("passes when the probe, carrying its token, arrives at the outbound listener", async () => {
    const ref: { check?: RedirectCheck } = {};
    const port = await outboundListener(ref);
    const check = (ref.check = createRedirectCheck({ probe: PROBE, dial: dialTo(port), timeoutMs: 5000 }));
    const result = await check.checkNow();
    expect(result).toEqual({ ok: true, elapsedMs: expect.any(Number) as number });
    expect(check.current()).toBe(result);
  });

  it("fails with ERR_REDIRECT_MISSING naming the nat rules when the probe cannot connect", async () => {
    const check = createRedirectCheck({ probe: PROBE, outboundPort: 4140, dial: dialTo(await closedPort()), timeoutMs: 5000 });
    const result = await check.checkNow();
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.code).toBe("ERR_REDIRECT_MISSING");
    expect(result.error.message).toContain("10.77.9.99:20001");
    expect(result.error.message).toContain("ECONNREFUSED");
    expect(result.error.message).toContain('"-A OUTPUT -j PROXY_INIT_OUTPUT"');
    expect(result.error.message).toContain('first in that chain, "-A PROXY_INIT_OUTPUT -d 10.77.9.99/32 -p tcp -m tcp --dport 20001 -j REDIRECT --to-ports 4140"');
  });

  it("does not count a connection with another token: something else answered the probe address", async () => {
    const ref: { check?: RedirectCheck } = {};
    const port = await outboundListener(ref);
    const check = (ref.check = createRedirectCheck({ probe: PROBE, dial: dialTo(port, () => "not-the-token"), timeoutMs: 300 }));
    const result = await check.checkNow();
    expect(result.ok === false && result.error.code).toBe("ERR_REDIRECT_MISSING");
  });

  it("leaves every connection whose original destination is not the probe address to the listener", async () => {
    const ref: { check?: RedirectCheck } = {};
    const port = await outboundListener(ref, { host: "10.77.9.98", port: 20001 });
    const check = (ref.check = createRedirectCheck({ probe: PROBE, dial: dialTo(port), timeoutMs: 300 }));
    expect((await check.checkNow()).ok).toBe(false);
    const answer = await new Promise<string>((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("hello\n"));
      socket.setEncoding("utf8").once("data", resolve);
    });
    expect(answer).toBe("forwarded\n");
  });

  it("checks at start and every intervalMs, reporting each result in order", async () => {
    const ref: { check?: RedirectCheck } = {};
    const port = await outboundListener(ref);
    const results: boolean[] = [];
    let up = true;
    const refused = await closedPort();
    const check = (ref.check = createRedirectCheck({ probe: PROBE, dial: (probe, token, ms) => dialTo(up ? port : refused)(probe, token, ms), intervalMs: 100, onResult: (r) => results.push(r.ok) }));
    closers.push(() => check.stop());
    check.start();
    await expect.poll(() => results.length, { timeout: 5000 }).toBeGreaterThanOrEqual(2);
    up = false;
    await expect.poll(() => results.at(-1), { timeout: 5000 }).toBe(false);
    up = true;
    await expect.poll(() => results.at(-1), { timeout: 5000 }).toBe(true);
    expect(results[0]).toBe(true);
  });
});

describe("dialProbe (the default dialer)", () => {
  it("dials from this process: the probe, carrying its token, arrives and the check passes", async () => {
    const ref: { check?: RedirectCheck } = {};
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      if (ref.check?.intercept(socket, { host: "127.0.0.1", port }) !== true) socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    closers.push(() => server.close());
    const { port } = server.address() as AddressInfo;
    const check = (ref.check = createRedirectCheck({ probe: { host: "127.0.0.1", port }, timeoutMs: 5000 }));
    expect(await check.checkNow()).toEqual({ ok: true, elapsedMs: expect.any(Number) as number });
  });

  it("rejects with the dial's code: refused, or closed without an answer", async () => {
    await expect(dialProbe({ host: "127.0.0.1", port: await closedPort() }, "t", 5000)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    const silent = net.createServer((socket) => socket.end());
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    closers.push(() => silent.close());
    await expect(dialProbe({ host: "127.0.0.1", port: (silent.address() as AddressInfo).port }, "t", 5000)).rejects.toMatchObject({ code: "ECONNRESET" });
  });
});
