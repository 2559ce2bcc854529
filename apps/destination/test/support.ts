import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const appDir = path.resolve(here, "..");
export const repoRoot = path.resolve(appDir, "../..");
export const mainJs = path.join(appDir, "dist", "main.js");
/** buf from @bufbuild/buf (a devDependency of this app). */
export const bufBin = path.join(appDir, "node_modules", ".bin", "buf");
/** The only thing the buf curl client knows: the proto files. */
export const protoSchema = path.join(repoRoot, "packages", "api");

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface DestinationProcess {
  child: ChildProcess;
  grpcPort: number;
  /** The inbound policy API's port (`--policy-addr`). */
  policyPort: number;
  adminPort: number;
  logs: LogLine[];
  stderr: () => string;
  /** Why a wait should give up: the process exited (with its stderr), or undefined while it runs. */
  failed: () => string | undefined;
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

async function waitFor<T>(probe: () => T | undefined, timeoutMs: number, what: string, stop?: () => string | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    const reason = stop?.();
    if (reason !== undefined) throw new Error(`${what}: ${reason}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export { waitFor };

/**
 * Starts the built meshtls-destination binary and waits for its "listening" log line: with `registryFile`, on
 * `--registry`; with `kubeconfig` (a file), on `--source kubernetes` (HOME then `home`, so no ~/.kube of the machine's is read).
 */
export async function startDestination(
  options: ({ registryFile: string } | { kubeconfig: string; home: string }) & { port?: number; args?: string[] },
): Promise<DestinationProcess> {
  if (!existsSync(mainJs)) throw new Error(`${mainJs} is missing: run \`pnpm --filter meshtls-destination build\` (turbo's test task does)`);
  const source = "registryFile" in options ? ["--registry", options.registryFile] : ["--source", "kubernetes", "--kubeconfig", options.kubeconfig];
  const env = { PATH: process.env.PATH ?? "", ...("home" in options ? { HOME: options.home } : {}) };
  const args = [
    mainJs,
    ...source,
    "--listen",
    `127.0.0.1:${options.port ?? 0}`,
    "--admin",
    "127.0.0.1:0",
    ...(options.args ?? ["--insecure-plaintext"]),
  ];
  // A fixed --listen port would put the policy API on 8090, which parallel runs on one machine share.
  if (!args.includes("--policy-addr")) args.push("--policy-addr", "127.0.0.1:0");
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env });
  const logs: LogLine[] = [];
  let stderr = "";
  let pending = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        logs.push({ msg: line, unparsed: true });
      }
    }
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve((exitCode = code))));
  const failed = (): string | undefined => (exitCode !== undefined ? `exited with ${exitCode}: ${stderr}` : undefined);
  const waitForLog = (match: (line: LogLine) => boolean, timeoutMs = 10_000): Promise<LogLine> => waitFor(() => logs.find(match), timeoutMs, "a log line", failed);
  const listening = await waitForLog((l) => l.msg === "listening", 20_000);
  const portOf = (addr: unknown): number => Number(String(addr).split(":").pop());
  return {
    child,
    grpcPort: portOf(listening.grpcAddress),
    policyPort: portOf(listening.policyAddress),
    adminPort: portOf(listening.adminAddress),
    logs,
    stderr: () => stderr,
    failed,
    waitForLog,
    exited,
    async stop(signal = "SIGTERM") {
      if (exitCode === undefined) child.kill(signal);
      return exited;
    },
  };
}

/** A `buf curl` Get stream: a client built only from the proto files. */
export interface BufStream {
  messages: Record<string, unknown>[];
  /** Times (Date.now()) at which each message was fully read. */
  receivedAt: number[];
  exited: Promise<{ code: number | null; stderr: string }>;
  close(): void;
}

/** Splits concatenated pretty-printed JSON objects as they arrive. */
function jsonObjects(onObject: (value: Record<string, unknown>) => void): (chunk: string) => void {
  let buffer = "";
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  let scanned = 0;
  return (chunk) => {
    buffer += chunk;
    for (let i = scanned; i < buffer.length; i++) {
      const c = buffer[i];
      if (inString) {
        if (escaped) escaped = false;
        else if (c === "\\") escaped = true;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === "{") {
        if (depth++ === 0) start = i;
      } else if (c === "}" && --depth === 0) {
        onObject(JSON.parse(buffer.slice(start, i + 1)) as Record<string, unknown>);
        buffer = buffer.slice(i + 1);
        i = -1;
      }
    }
    scanned = buffer.length;
  };
}

export function bufCurlGet(options: {
  port: number;
  path: string;
  contextToken?: string;
  scheme?: string;
  timeoutMs?: number;
  /** TLS instead of plaintext HTTP/2: trust anchors and an optional client certificate. */
  tls?: { caFile: string; serverName?: string; certFile?: string; keyFile?: string };
}): BufStream {
  const body = JSON.stringify({ scheme: options.scheme ?? "k8s", path: options.path, contextToken: options.contextToken ?? "" });
  const tls = options.tls;
  const transport = tls
    ? [
        "--cacert",
        tls.caFile,
        ...(tls.serverName ? ["--servername", tls.serverName] : []),
        ...(tls.certFile && tls.keyFile ? ["--cert", tls.certFile, "--key", tls.keyFile] : []),
      ]
    : ["--http2-prior-knowledge"];
  const child = spawn(
    bufBin,
    [
      "curl",
      "--schema",
      protoSchema,
      "--protocol",
      "grpc",
      ...transport,
      "-d",
      body,
      `${tls ? "https" : "http"}://127.0.0.1:${options.port}/io.linkerd.proxy.destination.Destination/Get`,
    ],
    { stdio: ["ignore", "pipe", "pipe"], timeout: options.timeoutMs ?? 30_000 },
  );
  const messages: Record<string, unknown>[] = [];
  const receivedAt: number[] = [];
  const feed = jsonObjects((value) => {
    messages.push(value);
    receivedAt.push(Date.now());
  });
  child.stdout.setEncoding("utf8").on("data", feed);
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on("close", (code) => resolve({ code, stderr })));
  return { messages, receivedAt, exited, close: () => child.kill("SIGTERM") };
}

/** IPv4 literal → the integer the net proto carries. */
export const ipv4Int = (ip: string): number => ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);

/** The integer the net proto carries → IPv4 literal. */
export const ipv4String = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");

/** A `WeightedAddr` as buf curl prints it (protojson). */
export interface JsonAddr {
  addr: { ip: { ipv4?: number; ipv6?: { first: string; last: string } }; port: number };
  weight: number;
  metricLabels?: Record<string, string>;
  tlsIdentity?: { dnsLikeIdentity?: { name: string }; serverName?: { name: string } };
  protocolHint?: { opaqueTransport?: { inboundPort: number } };
}

/** An IPv4 address's "ip:port", as the tests key endpoints. */
export const addrKey = (a: JsonAddr): string => `${ipv4String(a.addr.ip.ipv4 ?? 0)}:${a.addr.port}`;

export function addrsOf(message: Record<string, unknown> | undefined, kind: "add" | "remove"): JsonAddr[] {
  const body = message?.[kind] as { addrs?: unknown[] } | undefined;
  return (body?.addrs ?? []).map((a) => (kind === "add" ? a : { addr: a })) as JsonAddr[];
}

export async function adminGet(port: number, urlPath: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${urlPath}`);
  return { status: response.status, text: await response.text() };
}

/** A `buf curl` call of any method (built from the proto files only): its JSON messages as they arrive. */
export function bufCurl(options: { port: number; method: string; body: unknown; timeoutMs?: number }): BufStream {
  const child = spawn(
    bufBin,
    ["curl", "--schema", protoSchema, "--protocol", "grpc", "--http2-prior-knowledge", "-d", "@-", `http://127.0.0.1:${options.port}/${options.method}`],
    { stdio: ["pipe", "pipe", "pipe"], timeout: options.timeoutMs ?? 30_000 },
  );
  // The body goes through stdin: an oversized request would not fit in argv.
  child.stdin.end(JSON.stringify(options.body));
  const messages: Record<string, unknown>[] = [];
  const receivedAt: number[] = [];
  const feed = jsonObjects((value) => {
    messages.push(value);
    receivedAt.push(Date.now());
  });
  child.stdout.setEncoding("utf8").on("data", feed);
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on("close", (code) => resolve({ code, stderr })));
  return { messages, receivedAt, exited, close: () => child.kill("SIGTERM") };
}
