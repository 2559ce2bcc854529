// One row per attack: what the attacker saw, whether the process survived and still serves, and its RSS change.
import { appendFileSync } from "node:fs";
import { expect, inject } from "vitest";
import type { Proc } from "./processes.ts";

declare module "vitest" {
  export interface ProvidedContext {
    /** JSON-lines file the rows are appended to; global-setup prints them as one table. */
    hostileResultsFile: string;
  }
}

export interface Row {
  listener: string;
  attack: string;
  /** What the attacker observed (e.g. `400`, `closed`, `RST_STREAM`, `grpc-status 8`). */
  result: string;
  /** The attack-specific property (refused, counted, bounded) held. */
  ok: boolean;
  alive: boolean;
  /** The listener (and the process' other listeners named by the target) answered a legitimate request afterwards. */
  serving: boolean;
  rssDeltaKiB: number;
  /** The property asserted, shown when it failed. */
  expected: string;
}

/** A process under attack and how to tell it still does its job. */
export interface Target {
  proc: Proc;
  /** A legitimate request on the attacked listener (and whatever else the process must keep doing); true if answered. */
  serving: () => Promise<boolean>;
}

export interface Outcome {
  result: string;
  ok: boolean;
}

/** What a row that tries many inputs saw: a count per kind of answer, and the first input that failed. */
export interface Tally {
  /** Counts `key`; when not `ok`, keeps `failure()` if nothing failed before. Returns `ok`. */
  note(key: string, ok: boolean, failure: () => string): boolean;
  /** "key×n, …", after the first failure if any; ok when nothing failed. */
  outcome(): Outcome;
}

export function createTally(): Tally {
  const seen = new Map<string, number>();
  let failure: string | undefined;
  return {
    note(key, ok, describe) {
      seen.set(key, (seen.get(key) ?? 0) + 1);
      if (!ok) failure ??= describe();
      return ok;
    },
    outcome() {
      const counts = [...seen].map(([k, n]) => `${k}×${n}`).join(", ");
      return { result: failure === undefined ? counts : `${failure}; ${counts}`, ok: failure === undefined };
    },
  };
}

/**
 * Runs one attack against `target`: RSS before and after, the attack's own
 * outcome, then liveness and a legitimate request. The row is written before
 * anything is asserted, so failing rows are in the table too.
 */
export async function attack(target: Target, listener: string, name: string, expected: string, run: () => Promise<Outcome>): Promise<Row> {
  const before = target.proc.rssKiB();
  let outcome: Outcome;
  try {
    outcome = await run();
  } catch (error) {
    outcome = { result: `attack error: ${(error as Error).message}`.slice(0, 120), ok: false };
  }
  const serving = target.proc.alive() && (await target.serving().catch(() => false));
  const row: Row = {
    listener,
    attack: name,
    result: outcome.result,
    ok: outcome.ok,
    alive: target.proc.alive(),
    serving,
    rssDeltaKiB: target.proc.rssKiB() - before,
    expected,
  };
  appendFileSync(inject("hostileResultsFile"), `${JSON.stringify(row)}\n`);
  return row;
}

/** The must-hold properties of a row: alive, still serving, and the attack's own property. */
export function expectHolds(row: Row): void {
  const where = `${row.listener} × ${row.attack}`;
  expect(row.alive, `${where}: the process died (result: ${row.result})`).toBe(true);
  expect(row.serving, `${where}: no longer serves a legitimate request`).toBe(true);
  expect(row.ok, `${where}: expected ${row.expected}; saw ${row.result}`).toBe(true);
}
