import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { injectObject, type InjectOptions, type InjectReport } from "@meshtls/kubernetes";
import { parseAllDocuments, stringify } from "yaml";
import { CliError, describeError } from "../errors.ts";
import type { Output } from "../output.ts";

export interface InjectCommandOptions extends Omit<InjectOptions, "trustAnchorsPem"> {
  /** Files or folders (`.yaml`, `.yml`, `.json`, not recursing into sub-folders); `-` is standard input. */
  inputs: string[];
  /** The trust anchors PEM file (its SHA-256 is written on each pod). */
  trustAnchorsFile: string;
  /** `yaml` (default) or `json` (one object, or a `List` of several). */
  format: "yaml" | "json";
  /** Standard input, for `-`. Default `process.stdin`. */
  stdin?: NodeJS.ReadableStream;
}

async function readStdin(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString("utf8");
}

async function sources(inputs: string[], stdin: NodeJS.ReadableStream): Promise<{ name: string; text: string }[]> {
  const out: { name: string; text: string }[] = [];
  for (const input of inputs) {
    if (input === "-") {
      out.push({ name: "<stdin>", text: await readStdin(stdin) });
      continue;
    }
    try {
      if ((await stat(input)).isDirectory()) {
        const files = (await readdir(input)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
        for (const file of files) out.push({ name: path.join(input, file), text: await readFile(path.join(input, file), "utf8") });
      } else {
        out.push({ name: input, text: await readFile(input, "utf8") });
      }
    } catch (error) {
      throw new CliError("ERR_IO", `cannot read ${input}: ${describeError(error)}`, { cause: error });
    }
  }
  return out;
}

function reportLine(r: InjectReport): string {
  const what = `${r.kind.toLowerCase()} "${r.name}"${r.namespace === undefined ? "" : ` in ${r.namespace}`}`;
  return r.result === "injected" ? `${what} injected` : `${what} skipped (${r.result}): ${r.message ?? ""}`;
}

/**
 * `meshtls inject`: reads manifests (multi-document YAML, JSON, `List`s),
 * meshes every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob
 * and Pod, prints the result on stdout and a summary on stderr (as `linkerd
 * inject`). Injecting twice changes nothing the second time: a meshed pod is
 * reported `already-meshed` and passed through.
 */
export async function injectManifests(options: InjectCommandOptions, output: Output): Promise<InjectReport[]> {
  let trustAnchorsPem: string;
  try {
    trustAnchorsPem = await readFile(options.trustAnchorsFile, "utf8");
  } catch (error) {
    throw new CliError("ERR_IO", `cannot read --trust-anchors ${options.trustAnchorsFile}: ${describeError(error)}`, { cause: error });
  }
  if (!trustAnchorsPem.includes("-----BEGIN CERTIFICATE-----")) throw new CliError("ERR_INPUT", `--trust-anchors ${options.trustAnchorsFile} holds no PEM certificate`);
  const { inputs: _inputs, trustAnchorsFile: _file, format: _format, stdin: _stdin, ...rest } = options;
  const injectOptions: InjectOptions = { ...rest, trustAnchorsPem };

  const objects: unknown[] = [];
  for (const source of await sources(options.inputs, options.stdin ?? process.stdin)) {
    for (const doc of parseAllDocuments(source.text)) {
      if (doc.errors.length > 0) {
        const e = doc.errors[0]!;
        const at = e.linePos?.[0] === undefined ? "" : `:${e.linePos[0].line}:${e.linePos[0].col}`;
        throw new CliError("ERR_INPUT", `${source.name}${at}: ${e.message.split("\n")[0] ?? ""}`);
      }
      const value: unknown = doc.toJS();
      if (value !== null && value !== undefined) objects.push(value);
    }
  }
  const reports: InjectReport[] = [];
  const results = objects.map((object) => {
    try {
      const result = injectObject(object, injectOptions);
      reports.push(...result.reports);
      return result.object;
    } catch (error) {
      throw new CliError("ERR_INPUT", describeError(error), { cause: error });
    }
  });
  if (options.format === "json") {
    output.out(JSON.stringify(results.length === 1 ? results[0] : { apiVersion: "v1", kind: "List", items: results }, null, 2));
  } else {
    output.out(results.map((r) => stringify(r, { lineWidth: 0 }).trimEnd()).join("\n---\n"));
  }
  for (const r of reports) {
    output.err(reportLine(r));
    for (const warning of r.warnings) output.err(`  warning: ${warning}`);
  }
  const injected = reports.filter((r) => r.result === "injected").length;
  const others = reports.filter((r) => r.result === "unsupported-kind").length;
  output.err(`${injected} of ${reports.length - others} workloads injected${others === 0 ? "" : `, ${others} other object${others === 1 ? "" : "s"} passed through`}`);
  return reports;
}
