// Floods bounded in count and time: idle connections against a listener's connection cap.
import net from "node:net";
import { hostOf, portOf } from "./mesh.ts";
import { sleep } from "./processes.ts";
import type { Outcome } from "./results.ts";
import { metricSum, scrape } from "./wire.ts";

/**
 * Opens `count` connections that never send a byte, holds them for a second,
 * and counts those the server closed meanwhile (refused beyond its cap).
 */
export async function idleConnections(address: string, count: number): Promise<{ opened: number; closedByServer: number }> {
  const sockets: net.Socket[] = [];
  const droppedByUs = new WeakSet<net.Socket>();
  let closedByServer = 0;
  let opened = 0;
  for (let batch = 0; batch < count; batch += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, count - batch) }, () =>
        new Promise<void>((resolve) => {
          const socket = net.connect({ host: hostOf(address), port: portOf(address) });
          socket.once("connect", () => {
            opened++;
            resolve();
          });
          socket.on("error", () => resolve());
          socket.once("close", () => {
            if (!droppedByUs.has(socket)) closedByServer++;
            resolve();
          });
          sockets.push(socket);
        }),
      ),
    );
  }
  await sleep(1000);
  for (const socket of sockets) {
    droppedByUs.add(socket);
    socket.destroy();
  }
  await sleep(200);
  return { opened, closedByServer };
}

/**
 * `count` idle connections against a listener capped at `cap`: those beyond
 * are closed at once and the process' /metrics counts them (`metric` with
 * `fragments`).
 */
export async function capFlood(address: string, admin: () => string, count: number, cap: number, metric: string, ...fragments: string[]): Promise<Outcome> {
  const before = metricSum(await scrape(admin()), metric, ...fragments);
  const { opened, closedByServer } = await idleConnections(address, count);
  // The admin cap may itself refuse our scrape while the flood holds it: scrape afterwards.
  const after = metricSum(await scrape(admin()), metric, ...fragments);
  const beyond = count - cap;
  const capped = closedByServer >= beyond * 0.9;
  const counted = after - before >= beyond * 0.9;
  return {
    result: `${opened} connected, ${closedByServer} closed at once by the server; ${metric} +${after - before}`,
    ok: capped && counted,
  };
}
