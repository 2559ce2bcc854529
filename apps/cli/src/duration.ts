import { CliError } from "./errors.ts";

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Longest duration accepted anywhere: 1000 years, far beyond any sane certificate. */
export const MAX_DURATION_MS = 1000 * 365 * UNIT_MS.d!;

const DURATION_RE = /^(\d{1,9}(?:\.\d{1,6})?)(ms|s|m|h|d)/;

/**
 * Parses a duration such as `87600h`, `30d`, `1h30m` or `90s` into milliseconds.
 * Units: `d`, `h`, `m`, `s` (and `ms`); at least one unit is required; a leading
 * `-` makes it negative when `allowNegative` is set. Throws `CliError` ERR_USAGE.
 */
export function parseDurationMs(text: string, options: { allowNegative?: boolean } = {}): number {
  const input = text.trim();
  let rest = input;
  let sign = 1;
  if (rest.startsWith("-") && options.allowNegative === true) {
    sign = -1;
    rest = rest.slice(1);
  } else if (rest.startsWith("+")) {
    rest = rest.slice(1);
  }
  if (rest.length === 0 || rest.length > 64) {
    throw invalid(text);
  }
  let total = 0;
  while (rest.length > 0) {
    const match = DURATION_RE.exec(rest);
    if (match === null) {
      throw invalid(text);
    }
    total += Number(match[1]) * UNIT_MS[match[2]!]!;
    rest = rest.slice(match[0].length);
  }
  total = Math.round(total);
  if (total > MAX_DURATION_MS) {
    throw new CliError("ERR_USAGE", `duration "${text}" is longer than 1000 years`);
  }
  return sign * total;
}

function invalid(text: string): CliError {
  return new CliError(
    "ERR_USAGE",
    `invalid duration "${text}": use a number with a unit d, h, m or s (e.g. 24h, 30d, 1h30m)`,
  );
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
