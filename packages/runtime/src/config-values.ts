import type { Command } from "commander";
import { ConfigError } from "./errors.ts";

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The longest duration any flag accepts: 1000 years, far beyond any sane certificate or timeout. */
const MAX_DURATION_MS = 1000 * 365 * 86_400_000;

/**
 * The one duration parser of meshtls' command lines (the apps' and the CLI's):
 * `24h`, `90s`, `1h30m`, `500ms`, `7d` → milliseconds. Every part needs a
 * unit (`7000` is refused: seconds or milliseconds?); at most 64 characters and
 * 1000 years. A leading `-` is accepted only with `allowNegative` (`-1h`: an
 * hour ago).
 * @param what the flag, for the message (`--issuance-lifetime`)
 * @throws ConfigError naming `what`
 */
export function parseDurationMs(text: string, what: string, options: { allowNegative?: boolean } = {}): number {
  const re = /(\d{1,9}(?:\.\d{1,6})?)(ms|s|m|h|d)/y;
  let input = text.trim();
  if (input === "") throw new ConfigError(`${what}: empty duration`);
  const sign = input.startsWith("-") && options.allowNegative === true ? -1 : 1;
  if (sign === -1) input = input.slice(1);
  let total = 0;
  let at = 0;
  while (at < input.length || at === 0) {
    re.lastIndex = at;
    const m = input.length > 64 ? null : re.exec(input);
    if (!m || m[1] === undefined || m[2] === undefined) {
      throw new ConfigError(`${what}: "${text}" is not a duration; use a number with a unit ms, s, m, h or d (e.g. 24h, 20s)`);
    }
    total += Number(m[1]) * (UNIT_MS[m[2]] ?? 0);
    at = re.lastIndex;
  }
  if (total > MAX_DURATION_MS) throw new ConfigError(`${what}: "${text}" is longer than 1000 years`);
  return sign * Math.round(total);
}

/**
 * `host:port`, `[v6]:port` or `:port` (all interfaces, `0.0.0.0`).
 * @throws ConfigError naming `what`
 */
export function parseAddress(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = m?.[3] === undefined ? NaN : Number(m[3]);
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new ConfigError(`${what}: "${text}" is not host:port (e.g. 127.0.0.1:8080, [::1]:8080, :8080)`);
  }
  const host = m[1] ?? (m[2] === "" || m[2] === undefined ? "0.0.0.0" : m[2]);
  return { host, port };
}

/**
 * A whole number from `min` to `max` (a count or a cap: `100`, `10000`).
 * @param what the flag, for the message (`--max-concurrent-streams`)
 * @throws ConfigError naming `what` and the range
 */
export function parseCount(text: string, what: string, range: { min: number; max: number }): number {
  const value = text.trim();
  if (!/^[0-9]+$/.test(value) || Number(value) < range.min || Number(value) > range.max) {
    throw new ConfigError(`${what}: ${JSON.stringify(text)} is not a whole number from ${range.min} to ${range.max}`);
  }
  return Number(value);
}

/**
 * Whether a host or a socket's address is on loopback: `localhost`,
 * `127.0.0.0/8` (also IPv4-mapped, `::ffff:127.0.0.1`), `::1`. Undefined (a
 * socket already closed) is not.
 */
export function isLoopback(host: string | undefined): boolean {
  if (host === undefined) return false;
  const lower = host.toLowerCase();
  return lower === "localhost" || lower === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(lower);
}

/**
 * A boolean environment variable, strictly: `true`/`1` → on; `false`/`0`,
 * empty or unset → off; anything else is a ConfigError naming the variable.
 * (commander's `.env()` on a boolean flag turns it on for any value, `false` included.)
 */
export function parseBooleanEnv(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name];
  if (raw === undefined) return false;
  const value = raw.trim().toLowerCase();
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0" || value === "") return false;
  throw new ConfigError(`${name}: "${raw}" is not a boolean (use true, 1, false or 0)`);
}

/**
 * Parses `argv` with a commander program whose options read `.env()`
 * variables from `env` rather than the process's own environment, so that
 * config parsing is a pure function of its inputs (and testable).
 */
export function parseCommandLine(program: Command, argv: string[], env: NodeJS.ProcessEnv): void {
  const saved = process.env;
  process.env = env;
  try {
    program.parse(argv, { from: "node" });
  } finally {
    process.env = saved;
  }
}

/**
 * Runs an app's config parser; on a ConfigError prints `<app>: <message>` and
 * exits 2, and after commander's own help, version or usage output exits with
 * its code (0 for help and version, else 2). Only apps call this: it exits.
 */
export function parseConfigOrExit<C>(app: string, parse: () => C): C {
  try {
    return parse();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`${app}: ${error.message}`);
      process.exit(2);
    }
    // commander already printed help, version or its own usage error.
    const code = (error as { exitCode?: number }).exitCode;
    process.exit(code === 0 ? 0 : 2);
  }
}
