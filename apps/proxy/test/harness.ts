// Process-level test support: real binaries on loopback, no mocks.
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createIssuer, createTrustAnchor, generateKeyPair, exportPrivateKey, importPrivateKey, issueLeaf, pemEncode, toDer } from "@meshtls/pki";

export const run = promisify(execFile);
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const bins = {
  cli: path.join(repoRoot, "apps/cli/dist/main.js"),
  identity: path.join(repoRoot, "apps/identity/dist/main.js"),
  destination: path.join(repoRoot, "apps/destination/dist/main.js"),
  proxy: path.join(repoRoot, "apps/proxy/dist/main.js"),
};

export const identityOf = (sa: string, ns = "default"): string => `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export { freePort } from "../../../test-support/ports.ts";

export type LogLine = Record<string, unknown> & { msg?: string };

/** A child process whose JSON log lines are kept and can be waited for. */
export class Proc {
  readonly lines: LogLine[] = [];
  /** The stdout lines as written, before parsing (a parsed line keeps only the last of repeated keys). */
  readonly raw: string[] = [];
  readonly stderr: string[] = [];
  private waiters: { match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let buffer = "";
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const text = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        this.raw.push(text);
        let line: LogLine;
        try {
          line = JSON.parse(text) as LogLine;
        } catch {
          line = { msg: text };
        }
        this.lines.push(line);
        for (const w of [...this.waiters]) {
          if (w.match(line)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    });
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  waitFor(match: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const found = this.lines.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no matching log line in ${timeoutMs} ms; stderr: ${this.stderr.join("")}; last: ${JSON.stringify(this.lines.slice(-5))}`)), timeoutMs);
      this.waiters.push({ match, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor((l) => l.msg === msg, timeoutMs);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.child.exitCode;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

export function startNode(name: string, bin: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [bin, ...args], { env: { PATH: process.env["PATH"], ...env }, stdio: ["ignore", "pipe", "pipe"] });
  return new Proc(name, child);
}

/** A whole other mesh PKI (anchor + issuer) written as certs create would, made in process. */
export async function createForeignPki(dir: string): Promise<void> {
  const anchor = await createTrustAnchor();
  const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
  writeFileSync(path.join(dir, "ca.crt"), pemEncode("CERTIFICATE", anchor.certificate));
  writeFileSync(path.join(dir, "issuer.crt"), pemEncode("CERTIFICATE", issuer.certificate));
  writeFileSync(path.join(dir, "issuer.key"), (await exportPrivateKey(issuer.keyPair.privateKey)) as string);
}

/** The mesh's PKI and tokens, made by the `meshtls` CLI. */
export interface Material {
  dir: string;
  caFile: string;
  tokenFile(sa: string): Promise<string>;
}

export async function createMaterial(dir: string): Promise<Material> {
  await run(process.execPath, [bins.cli, "certs", "create", "--out", dir], { timeout: 30_000 });
  await run(process.execPath, [bins.cli, "token", "keygen", "--out", dir], { timeout: 30_000 });
  return {
    dir,
    caFile: path.join(dir, "ca.crt"),
    async tokenFile(sa) {
      const { stdout } = await run(process.execPath, [bins.cli, "token", "mint", "--key", path.join(dir, "token-signer.key"), "--namespace", "default", "--service-account", sa], { timeout: 30_000 });
      const file = path.join(dir, `${sa}.token`);
      writeFileSync(file, stdout.trim());
      return file;
    },
  };
}

/** A leaf for `identity` signed by the issuer in `dir` (as the identity service would): key and chain PEM files. */
export async function issueFromDir(dir: string, identity: string, outPrefix: string): Promise<{ certFile: string; keyFile: string; leafFile: string; chainFile: string }> {
  const issuerCert = toDer(readFileSync(path.join(dir, "issuer.crt"), "utf8"), "CERTIFICATE");
  const issuerKey = await importPrivateKey(readFileSync(path.join(dir, "issuer.key"), "utf8"));
  const keyPair = await generateKeyPair();
  const leaf = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity });
  const certFile = `${outPrefix}.crt`;
  const keyFile = `${outPrefix}.key`;
  writeFileSync(certFile, pemEncode("CERTIFICATE", leaf) + pemEncode("CERTIFICATE", issuerCert));
  writeFileSync(keyFile, (await exportPrivateKey(keyPair.privateKey)) as string);
  const leafFile = `${outPrefix}-leaf.crt`;
  const chainFile = `${outPrefix}-chain.crt`;
  writeFileSync(leafFile, pemEncode("CERTIFICATE", leaf));
  writeFileSync(chainFile, pemEncode("CERTIFICATE", issuerCert));
  return { certFile, keyFile, leafFile, chainFile };
}

export async function scrape(adminAddress: string): Promise<string> {
  const res = await fetch(`http://${adminAddress}/metrics`);
  return res.text();
}

/** The value of the first sample whose line contains every fragment, or 0. */
export function sample(metrics: string, name: string, ...fragments: string[]): number {
  for (const line of metrics.split("\n")) {
    if (line.startsWith(`${name}{`) && fragments.every((f) => line.includes(f))) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return 0;
}

/** The keys of a JSON object text's top level, in order and with repeats (JSON.parse keeps only the last). */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && /^\s*:/.test(text.slice(j + 1))) keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      i = j;
    } else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
  }
  return keys;
}
