// The proxy's redirect check module on loopback: its listener stands in for the
// transparent outbound listener, each connection "redirected" from the probe address.
import net from "node:net";
import type { AddressInfo } from "node:net";
import { noopLogger } from "@meshtls/proxy-core";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../src/config.ts";
import { createProxyRedirectCheck } from "../src/redirect-check.ts";
import type { ProxyRedirectCheck } from "../src/redirect-check.ts";

const base = [
  "--identity", "web.default.serviceaccount.identity.meshtls.cluster.local",
  "--token-file", "/t", "--trust-anchors", "/ca.crt",
  "--identity-addr", "127.0.0.1:8080", "--identity-name", "identity.meshtls.serviceaccount.identity.meshtls.cluster.local",
  "--destination-addr", "127.0.0.1:8086", "--destination-insecure-plaintext", "--workload", "127.0.0.1:8080", "--transparent",
];
const closers: (() => void)[] = [];
afterEach(() => closers.splice(0).forEach((close) => close()));

/** A listener whose connections all come "from" `original`: taken by the check's intercept, or answered "forwarded". */
async function listener(check: () => ProxyRedirectCheck, original: { address: string; port: number }): Promise<number> {
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    if (!check().intercept(socket, original)) socket.end("forwarded\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

const ask = (port: number): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.write("someone\n"));
    socket.setEncoding("utf8").once("data", (answer: string) => (socket.destroy(), resolve(answer)));
    socket.on("error", reject);
  });

describe("createProxyRedirectCheck", () => {
  it("with the check off (the default) still answers connections to the probe address, never forwarding them, and leaves /ready and the metrics alone", async () => {
    const config = parseConfig(["node", "meshtls-proxy", ...base], {});
    expect(config.redirectCheck.intervalMs).toBe(0);
    const registry = new Registry();
    const check = createProxyRedirectCheck({ config, registry, logger: noopLogger });
    check.start();
    closers.push(() => check.stop());
    // Behind meshtls init's probe rule a forwarded probe-address connection would come back to the proxy: a loop.
    expect(await ask(await listener(() => check, { address: "1.1.1.1", port: 20001 }))).toBe("unknown\n");
    expect(await ask(await listener(() => check, { address: "1.1.1.1", port: 443 }))).toBe("forwarded\n");
    expect(check.ready()).toEqual({ ok: true });
    expect(await registry.metrics()).not.toContain("transparent_redirect");
  });

  it("with an interval, dials the probe from its own process: ready and gauge 1 once it arrives; 503, gauge 0 and counted when it cannot", async () => {
    const configFor = (probePort: number) => parseConfig(["node", "meshtls-proxy", ...base, "--redirect-check-interval", "300ms", "--redirect-check-addr", `127.0.0.1:${probePort}`], {});
    // On loopback, without nat, the probe address is the stand-in listener itself.
    const original = { address: "127.0.0.1", port: 0 };
    const ref: { check?: ProxyRedirectCheck } = {};
    original.port = await listener(() => ref.check!, original);
    const registry = new Registry();
    const check = (ref.check = createProxyRedirectCheck({ config: configFor(original.port), registry, logger: noopLogger }));
    expect(check.ready()).toEqual({ ok: false, reason: "the transparent redirect check has not finished yet" });
    check.start();
    closers.push(() => check.stop());
    await expect.poll(() => check.ready(), { timeout: 10_000 }).toEqual({ ok: true });
    expect(await registry.metrics()).toContain('transparent_redirect_ok{direction="outbound"} 1');

    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const missingRegistry = new Registry();
    const missing = createProxyRedirectCheck({ config: configFor(closedPort), registry: missingRegistry, logger: noopLogger });
    missing.start();
    closers.push(() => missing.stop());
    await expect.poll(() => missing.ready().ok, { timeout: 10_000 }).toBe(false);
    await expect.poll(() => missing.ready().reason ?? "", { timeout: 10_000 }).toMatch(/^ERR_REDIRECT_MISSING: .*ECONNREFUSED/);
    const text = await missingRegistry.metrics();
    expect(text).toContain('transparent_redirect_ok{direction="outbound"} 0');
    expect(text).toMatch(/transparent_redirect_check_failures_total\{direction="outbound"\} [1-9]/);
  });
});
