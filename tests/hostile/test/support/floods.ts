// Floods bounded in count and time: idle connections against a listener's connection cap.
import net from "node:net";
import { hostOf, portOf } from "./mesh.ts";
import { sleep } from "./processes.ts";
import type { Outcome } from "./results.ts";
import { scrape } from "./wire.ts";

/** Idle connections held open: how many connected, how many the server has closed so far. */
export interface HeldConnections {
  opened: () => number;
  closedByServer: () => number;
  /** Destroys every connection (closes after this are not the server's) and waits 200 ms. */
  release: () => Promise<void>;
}

/** Opens `count` connections that never send a byte, 50 at a time, and holds them until `release()`. */
export async function holdIdleConnections(address: string, count: number): Promise<HeldConnections> {
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
  return {
    opened: () => opened,
    closedByServer: () => closedByServer,
    release: async () => {
      for (const socket of sockets) {
        droppedByUs.add(socket);
        socket.destroy();
      }
      await sleep(200);
    },
  };
}

/**
 * Opens `count` connections that never send a byte, holds them for a second,
 * and counts those the server closed meanwhile (refused beyond its cap).
 */
export async function idleConnections(address: string, count: number): Promise<{ opened: number; closedByServer: number }> {
  const held = await holdIdleConnections(address, count);
  await sleep(1000);
  const counts = { opened: held.opened(), closedByServer: held.closedByServer() };
  await held.release();
  return counts;
}

/**
 * `count` idle connections against a listener capped at `cap`: those beyond
 * are closed at once and the process' /metrics counts them (`counted` reads
 * the count from a scrape; `what` names it in the result).
 */
export async function capFlood(address: string, admin: () => string, count: number, cap: number, what: string, counted: (metrics: string) => number): Promise<Outcome> {
  const before = counted(await scrape(admin()));
  const { opened, closedByServer } = await idleConnections(address, count);
  // The admin cap may itself refuse our scrape while the flood holds it: scrape afterwards.
  const after = counted(await scrape(admin()));
  const beyond = count - cap;
  const capped = closedByServer >= beyond * 0.9;
  const recorded = after - before >= beyond * 0.9;
  return {
    result: `${opened} connected, ${closedByServer} closed at once; ${what} +${after - before}`,
    ok: capped && recorded,
  };
}

/** The sum of every sample whose metric name matches `pattern` (any labels). */
export function sumMatching(pattern: RegExp): (metrics: string) => number {
  return (metrics) =>
    metrics
      .split("\n")
      .filter((line) => !line.startsWith("#") && pattern.test(line.split(/[{ ]/)[0] ?? ""))
      .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0);
}
