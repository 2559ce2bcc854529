// A destination service killed and restarted on its port: the client keeps the last known set, retries on its own
// schedule (1 s doubling, each retry on a connection dialed for it) and converges at the first retry after the return.
import { describe, expect, it } from "vitest";
import { createDestinationClient, type EndpointSet } from "./client.js";
import type { Logger } from "./logger.js";
import { createStaticRegistry, type RegistryService } from "./registry.js";
import { cleanupsAfterEach, eventually, startServer } from "./test-support.js";

const service = (addresses: string[]): RegistryService => ({
  name: "web",
  namespace: "shop",
  ports: [],
  endpoints: addresses.map((address, i) => ({ address, meshed: true, serviceAccount: "web", inboundPort: 4143, pod: `web-${i}`, weight: 10000 })),
});
const addresses = (set: EndpointSet | undefined): string => (set?.endpoints ?? []).map((e) => e.address).sort().join(",");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A logger that keeps the `delayMs` of each "reconnecting" line, with when it was logged. */
function retryLog(): { logger: Logger; retries: { at: number; delayMs: number }[] } {
  const retries: { at: number; delayMs: number }[] = [];
  const keep = (fields: object): void => {
    const delayMs = (fields as { delayMs?: unknown }).delayMs;
    if (typeof delayMs === "number") retries.push({ at: Date.now(), delayMs });
  };
  return { retries, logger: { debug: keep, info: keep, warn: keep, error: keep } as unknown as Logger };
}

describe("destination client reconnect", () => {
  const cleanups = cleanupsAfterEach();

  it("converges at the first scheduled retry after a 5 s outage, serving the last known set meanwhile", { timeout: 40_000 }, async () => {
    const registry = createStaticRegistry({ services: [service(["127.0.1.1"])] });
    let server = await startServer({ registry });
    const port = server.port;
    const log = retryLog();
    // No jitter: the retries come 1, 2, 4 s apart (at 1, 3 and 7 s after the kill).
    const client = createDestinationClient({ address: server.address, logger: log.logger, random: () => 0 });
    cleanups.push(() => client.close());
    const resolution = client.resolve("web.shop:80");
    await resolution.ready({ timeoutMs: 5000 });
    const seen: string[] = [];
    resolution.subscribe((set) => seen.push(addresses(set)));

    const killedAt = Date.now();
    server.kill();
    registry.set({ services: [service(["127.0.1.1", "127.0.1.2"])] });
    while (Date.now() - killedAt < 5000) {
      expect(addresses(resolution.current())).toBe("127.0.1.1");
      await sleep(100);
    }
    const returnedAt = Date.now();
    server = await startServer({ registry }, port);
    cleanups.push(() => server.stop());
    await eventually(() => addresses(resolution.current()) === "127.0.1.1,127.0.1.2", 20_000, "convergence");
    const convergedS = (Date.now() - returnedAt) / 1000;
    console.log(`converged ${convergedS.toFixed(2)} s after the return; retries ${log.retries.map((r) => `+${((r.at - killedAt) / 1000).toFixed(1)} s: ${r.delayMs} ms`).join(", ")}`);

    expect(log.retries.slice(0, 3).map((r) => r.delayMs)).toEqual([1000, 2000, 4000]);
    // The retry due 7 s after the kill (2 s after the return) is the one that gets through.
    const due = killedAt + 7000;
    expect(Date.now()).toBeLessThan(due + 1500);
    expect(convergedS).toBeLessThan(5);
    expect(seen.every((s) => s !== "")).toBe(true);
  });
});
