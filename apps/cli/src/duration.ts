import { ConfigError, parseDurationMs as parseRuntimeDuration } from "@meshtls/runtime";
import { CliError } from "./errors.ts";

/**
 * A duration flag's value (`87600h`, `30d`, `1h30m`, `90s`) in milliseconds,
 * by the runtime's parser, the one every meshtls command line uses: every
 * part needs a unit, at most 1000 years; a leading `-` only with
 * `allowNegative`. Throws `CliError` ERR_USAGE naming `flag`.
 */
export function parseDurationMs(text: string, flag: string, options: { allowNegative?: boolean } = {}): number {
  try {
    return parseRuntimeDuration(text, flag, options);
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError("ERR_USAGE", error.message, { cause: error });
    throw error;
  }
}

/** Formats milliseconds in words for people: `23h 59m`, `364d 23h`, `45s`. At most two units. */
export function formatDurationMs(ms: number): string {
  let rest = Math.floor(Math.abs(ms) / 1000);
  const parts: string[] = [];
  for (const [unit, seconds] of [
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
    ["s", 1],
  ] as const) {
    const n = Math.floor(rest / seconds);
    rest -= n * seconds;
    if (n > 0 || (unit === "s" && parts.length === 0)) {
      parts.push(`${n}${unit}`);
    }
  }
  return parts.slice(0, 2).join(" ");
}

/** "expires in 23h 59m" / "expired 2d 3h ago" relative to `now`. */
export function describeExpiry(notAfter: Date, now: Date): string {
  const remainingMs = notAfter.getTime() - now.getTime();
  return remainingMs > 0
    ? `expires in ${formatDurationMs(remainingMs)}`
    : `expired ${formatDurationMs(remainingMs)} ago`;
}
