import { CliError } from "../errors.ts";

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Most samples read from one scrape (100 000): a proxy exposes a few hundred. */
export const MAX_SAMPLES = 100_000;

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/**
 * Parses the Prometheus text exposition format (version 0.0.4) into samples.
 * Comments and `# HELP`/`# TYPE` lines are skipped. Throws `CliError`
 * ERR_INPUT naming the line on anything malformed, and past MAX_SAMPLES.
 */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  const lines = text.split("\n");
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (samples.length >= MAX_SAMPLES) {
      throw new CliError("ERR_INPUT", `metrics: more than ${MAX_SAMPLES} samples`);
    }
    try {
      samples.push(parseLine(line));
    } catch (error) {
      const shown = line.length > 120 ? `${line.slice(0, 120)}…` : line;
      throw new CliError("ERR_INPUT", `metrics line ${index + 1} is malformed (${(error as Error).message}): ${shown}`, { cause: error });
    }
  }
  return samples;
}

function parseLine(line: string): Sample {
  const name = NAME_RE.exec(line)?.[0];
  if (name === undefined) throw new Error("no metric name");
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith("{")) {
    rest = rest.slice(1);
    for (;;) {
      rest = rest.trimStart();
      if (rest.startsWith("}")) {
        rest = rest.slice(1);
        break;
      }
      const labelName = LABEL_NAME_RE.exec(rest)?.[0];
      if (labelName === undefined) throw new Error("bad label name");
      rest = rest.slice(labelName.length).trimStart();
      if (!rest.startsWith('="')) throw new Error(`label ${labelName} has no quoted value`);
      rest = rest.slice(2);
      let value = "";
      let closed = false;
      let i = 0;
      for (; i < rest.length; i++) {
        const c = rest[i]!;
        if (c === "\\") {
          const next = rest[i + 1];
          if (next === "n") value += "\n";
          else if (next === "\\" || next === '"') value += next;
          else throw new Error("bad escape in a label value");
          i++;
        } else if (c === '"') {
          closed = true;
          break;
        } else {
          value += c;
        }
      }
      if (!closed) throw new Error(`label ${labelName} value is not closed`);
      if (Object.hasOwn(labels, labelName)) throw new Error(`label ${labelName} repeated`);
      // An own property even for a hostile "__proto__" label.
      Object.defineProperty(labels, labelName, { value, enumerable: true, writable: true, configurable: true });
      rest = rest.slice(i + 1).trimStart();
      if (rest.startsWith(",")) rest = rest.slice(1);
      else if (!rest.startsWith("}")) throw new Error("expected , or } after a label");
    }
  }
  if (!/^\s/.test(rest)) throw new Error("no value");
  const [valueText, timestamp, extra] = rest.trim().split(/\s+/);
  if (valueText === undefined || extra !== undefined || (timestamp !== undefined && !/^-?\d+$/.test(timestamp))) {
    throw new Error("expected a value and an optional integer timestamp");
  }
  const value = parseValue(valueText);
  return { name, labels, value };
}

/** A sample value. Like Prometheus (Go's ParseFloat), NaN and Inf in any case: prom-client writes `Nan` for an unmeasured gauge. */
function parseValue(text: string): number {
  const lower = text.toLowerCase();
  if (lower === "+inf" || lower === "inf") return Infinity;
  if (lower === "-inf") return -Infinity;
  if (lower === "nan") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`"${text}" is not a number`);
  return Number(text);
}

/** The samples named `name` whose labels include every pair of `labels`. */
export function findSamples(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The sum of the values of findSamples (0 when there is none). */
export function sumSamples(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return findSamples(samples, name, labels).reduce((sum, s) => sum + s.value, 0);
}
