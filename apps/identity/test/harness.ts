import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { credentials, Metadata } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { IdentityClient } from "@meshtls/api";
import type { CertifyRequest, CertifyResponse } from "@meshtls/api";

const run = promisify(execFile);

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const cliBin = path.join(repoRoot, "apps/cli/dist/main.js");
export const identityBin = path.join(repoRoot, "apps/identity/dist/main.js");
export const protoDir = path.join(repoRoot, "packages/api/proto");
export const bufBin = path.join(repoRoot, "apps/identity/node_modules/.bin/buf");

export const TOKEN_ISSUER = "https://meshtls.local";
export const SERVER_NAME = "identity.meshtls.serviceaccount.identity.meshtls.cluster.local";

export function identityFor(sa: string, ns = "default"): string {
  return `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), `meshtls-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs the built `meshtls` CLI; returns stdout. */
export async function cli(args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [cliBin, ...args], { timeout: 20_000 });
  return stdout;
}

export async function openssl(args: string[], options: { input?: Buffer } = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn("openssl", args, { stdio: [options.input ? "pipe" : "ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: code ?? -1 });
    });
    if (child.stdin) {
      // openssl may exit before reading its input (s_client on a failed handshake): that is not an error here.
      child.stdin.on("error", () => {});
      child.stdin.end(options.input);
    }
  });
}

/** `meshtls certs create` + `meshtls token keygen` into `dir` (ca.crt, ca.key, issuer.crt, issuer.key, token/). */
export async function createMaterial(dir: string): Promise<void> {
  await cli(["certs", "create", "--out", dir]);
  await cli(["token", "keygen", "--out", path.join(dir, "token")]);
}

export async function mintToken(dir: string, ns: string, sa: string, extra: string[] = []): Promise<string> {
  return (await cli(["token", "mint", "--key", path.join(dir, "token", "token-signer.key"), "--namespace", ns, "--service-account", sa, ...extra])).trim();
}

/** Makes a P-256 CSR with openssl; returns DER. `config` lines go into the request's extensions. */
export async function opensslCsr(
  dir: string,
  options: { cn?: string; san?: string; newkey?: string[]; name?: string } = {},
): Promise<{ der: Buffer; keyFile: string }> {
  const name = options.name ?? `csr-${Math.random().toString(36).slice(2)}`;
  const keyFile = path.join(dir, `${name}.key`);
  const out = path.join(dir, `${name}.der`);
  const args = ["req", "-new", "-nodes", "-keyout", keyFile, "-outform", "DER", "-out", out, "-subj", options.cn === undefined ? "/" : `/CN=${options.cn}`];
  args.push(...(options.newkey ?? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]));
  if (options.san) args.push("-addext", `subjectAltName=${options.san}`);
  const result = await openssl(args);
  if (result.code !== 0) throw new Error(`openssl req failed: ${result.stderr}`);
  return { der: await readFile(out), keyFile };
}

export interface IdentityProcess {
  child: ChildProcess;
  grpcAddress: string;
  adminUrl: string;
  logs: Record<string, unknown>[];
  stderr: () => string;
  waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<number | null>;
}

/** Starts the built `meshtls-identity` on 127.0.0.1 with OS-chosen ports and waits for its "listening" line. */
export async function startIdentity(options: {
  dir: string;
  issuerDir?: string;
  /** The trust anchors file; default `<dir>/ca.crt`. */
  trustAnchors?: string;
  args?: string[];
  listen?: string;
  env?: Record<string, string>;
}): Promise<IdentityProcess> {
  const args = [
    identityBin,
    "--trust-anchors",
    options.trustAnchors ?? path.join(options.dir, "ca.crt"),
    "--issuer-dir",
    options.issuerDir ?? options.dir,
    "--token-jwks",
    path.join(options.dir, "token", "jwks.json"),
    "--token-issuer",
    TOKEN_ISSUER,
    "--listen",
    options.listen ?? "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env["PATH"] ?? "", ...options.env } });
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let stderr = "";
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ raw: line });
      }
      for (const w of [...waiters]) w();
    }
  });
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  exited.then(() => {
    for (const w of [...waiters]) w();
  });

  function waitForLog(predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = logs.find(predicate);
        if (hit) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit);
        } else if (child.exitCode !== null) {
          waiters.delete(check);
          clearTimeout(timer);
          reject(new Error(`meshtls-identity exited (${child.exitCode}): ${stderr}`));
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`timed out waiting for a log line; stderr: ${stderr}; logs: ${JSON.stringify(logs.slice(-5))}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  }

  const listening = await waitForLog((l) => l["msg"] === "listening");
  return {
    child,
    grpcAddress: String(listening["grpc"]),
    adminUrl: `http://${String(listening["admin"])}`,
    logs,
    stderr: () => stderr,
    waitForLog,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A gRPC client built only from the generated API, verifying the service as SERVER_NAME against ca.crt (or `anchors`). */
export async function identityClient(dir: string, address: string, options: { plaintext?: boolean; anchors?: string } = {}): Promise<IdentityClient> {
  if (options.plaintext) return new IdentityClient(address, credentials.createInsecure());
  const ca = await readFile(options.anchors ?? path.join(dir, "ca.crt"));
  return new IdentityClient(address, credentials.createSsl(ca), { "grpc.ssl_target_name_override": SERVER_NAME, "grpc.default_authority": SERVER_NAME });
}

export function certify(client: IdentityClient, request: CertifyRequest, timeoutMs = 10_000): Promise<CertifyResponse> {
  return new Promise((resolve, reject) => {
    client.certify(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (error: ServiceError | null, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

export async function writeToken(dir: string, token: string, name = "token.jwt"): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, `${token}\n`);
  return file;
}

export function derToPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64").replace(/.{64}/g, "$&\n");
  return `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith("\n") ? "" : "\n"}-----END CERTIFICATE-----\n`;
}
