// The attacks on an admin HTTP port: malformed, oversized, truncated and random request lines.
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { it } from "vitest";
import { capFlood, sumMatching } from "./floods.ts";
import { attack, createTally, expectHolds } from "./results.ts";
import type { Outcome, Target } from "./results.ts";
import { exchange, httpStatus } from "./wire.ts";

export const REFUSED_4XX = "a 4xx answer or a hang-up, never 2xx/3xx/5xx or silence";

/** 4xx, or the server hung up without answering: a refusal. Anything else (2xx, 5xx, a hang) is not. */
export function refusedHttp(bytes: Buffer, closedByServer: boolean): Outcome {
  const status = httpStatus(bytes);
  if (status === undefined) return { result: closedByServer ? "closed without an answer" : "no answer, left open", ok: closedByServer };
  return { result: String(status), ok: status >= 400 && status < 500 };
}

export async function sendRaw(admin: string, data: Buffer, after: "end" | "keep" = "keep"): Promise<Outcome> {
  const answer = await exchange(admin, data, { timeoutMs: 5000, after, enoughBytes: 12 });
  return refusedHttp(answer.bytes, answer.closedByServer || answer.bytes.length >= 12);
}

const line = (text: string): Buffer => Buffer.from(text, "latin1");

/**
 * Registers the admin-port attacks as tests; `get` is called when a test
 * runs (the processes start in the file's beforeAll).
 */
export function defineAdminAttacks(listener: string, get: () => { admin: string; target: Target }): void {
  const cases: [string, () => Buffer][] = [
    ["GET //[ HTTP/1.1", () => line("GET //[ HTTP/1.1\r\nHost: admin\r\n\r\n")],
    ["GET http://[ HTTP/1.1", () => line("GET http://[ HTTP/1.1\r\nHost: admin\r\n\r\n")],
    ["GET http://[::1 (absolute URI, no bracket close)", () => line("GET http://[::1/metrics HTTP/1.1\r\nHost: admin\r\n\r\n")],
    ["GET with a 100 KiB header", () => line(`GET /live HTTP/1.1\r\nHost: admin\r\nX-Big: ${"a".repeat(100 * 1024)}\r\n\r\n`)],
    ["10,000 headers", () => line(`GET /live HTTP/1.1\r\nHost: admin\r\n${"X-A: b\r\n".repeat(10_000)}\r\n`)],
    ["4 KiB of binary junk", () => randomBytes(4096)],
    ["NUL and CR bytes in the request target", () => line("GET /li\u0000ve\r/x HTTP/1.1\r\nHost: admin\r\n\r\n")],
    ["method of 64 KiB", () => line(`${"G".repeat(64 * 1024)} / HTTP/1.1\r\nHost: admin\r\n\r\n`)],
  ];
  for (const [name, bytes] of cases) {
    it(`${listener}: ${name}`, async () => {
      const { admin, target } = get();
      expectHolds(await attack(target, listener, name, REFUSED_4XX, () => sendRaw(admin, bytes())));
    });
  }

  it(`${listener}: half a request line, then close`, async () => {
    const { admin, target } = get();
    const row = await attack(target, listener, "half a request line, then close", "the process unaffected", async () => {
      await exchange(admin, line("GET /metr"), { after: "destroy" });
      await exchange(admin, line("POST /shutdown HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"), { after: "destroy" });
      return { result: "dropped by the client", ok: true };
    });
    expectHolds(row);
  });

  it(`${listener}: random and mutated request lines (fast-check, 40 runs)`, async () => {
    const { admin, target } = get();
    const row = await attack(target, listener, "random/mutated request lines (fast-check)", REFUSED_4XX + " for every line", async () => {
      const valid = "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n";
      const mutated = fc
        .tuple(fc.nat({ max: valid.length - 1 }), fc.uint8Array({ minLength: 1, maxLength: 8 }))
        .map(([at, junk]) => Buffer.concat([line(valid.slice(0, at)), Buffer.from(junk), line(valid.slice(at + 1))]));
      const randomTarget = fc
        .tuple(fc.constantFrom("GET", "HEAD", "POST", "OPTIONS", "CONNECT", "X"), fc.string({ unit: "binary", maxLength: 60 }))
        .map(([method, target]) => line(`${method} ${target.replace(/[\r\n ]/g, "")} HTTP/1.1\r\nHost: admin\r\n\r\n`));
      const tally = createTally();
      await fc.assert(
        fc.asyncProperty(fc.oneof(mutated, randomTarget), async (bytes) => {
          const answer = await exchange(admin, bytes, { timeoutMs: 3000, enoughBytes: 12 });
          const status = httpStatus(answer.bytes);
          const key = status === undefined ? (answer.closedByServer ? "closed" : "silent") : String(status);
          // A mutation can leave a valid request: a 2xx is then fine; a 5xx, a hang or a crash never is.
          const ok = status === undefined ? answer.closedByServer : status < 500;
          return tally.note(key, ok, () => `${key} for ${JSON.stringify(bytes.toString("latin1").slice(0, 40))}`) && target.proc.alive();
        }),
        { numRuns: 40, endOnFailure: true, interruptAfterTimeLimit: 40_000 },
      ).catch(() => undefined);
      return tally.outcome();
    });
    expectHolds(row);
  });
}

/** The runtime admin server's connection cap (ADMIN_SERVER_LIMITS.maxConnections in @meshtls/runtime). */
export const SERVICE_ADMIN_CAP = 256;

/** Idle connections beyond a service admin port's cap: closed at once, and counted by some `*connections_refused*` metric. */
export function defineServiceAdminFlood(listener: string, get: () => { admin: string; target: Target }): void {
  const count = SERVICE_ADMIN_CAP + 100;
  it(`${listener}: ${count} idle connections against a cap of ${SERVICE_ADMIN_CAP}`, async () => {
    const { admin, target } = get();
    const row = await attack(target, listener, `${count} idle connections (cap ${SERVICE_ADMIN_CAP})`, "beyond the cap closed at once and counted in a *connections_refused* metric", () =>
      capFlood(admin, () => admin, count, SERVICE_ADMIN_CAP, "*connections_refused*", sumMatching(/connections_refused/)),
    );
    expectHolds(row);
  });
}
