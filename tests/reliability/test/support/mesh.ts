// A small mesh on loopback whose control plane can be killed and brought back on the same ports:
// the hostile suite's PKI, process and proxy helpers, with restartable identity and destination services.
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { createMaterial, identityOf, startProxy } from "@meshtls/hostile-suite/test/support/mesh.ts";
import type { Material, ProxyProcess, Service } from "@meshtls/hostile-suite/test/support/mesh.ts";
import { bins, freePort, startNode, tempDir } from "@meshtls/hostile-suite/test/support/processes.ts";
import type { Proc } from "@meshtls/hostile-suite/test/support/processes.ts";

export { identityOf, startProxy };
export type { Material, ProxyProcess, Service };
export { freePort, poll, sleep, stopAll, tempDir } from "@meshtls/hostile-suite/test/support/processes.ts";
export type { Proc } from "@meshtls/hostile-suite/test/support/processes.ts";

/** A control-plane process on fixed ports: killed with SIGKILL and started again with the same arguments. */
export class ControlPlaneProcess implements Service {
  proc!: Proc;
  readonly tls: boolean;
  serverName = "";
  /** Times it was started. */
  starts = 0;

  constructor(
    readonly name: string,
    private readonly bin: string,
    private readonly args: string[],
    readonly grpc: string,
    readonly admin: string,
    options: { tls: boolean; serverName?: string },
  ) {
    this.tls = options.tls;
    this.serverName = options.serverName ?? "";
  }

  /** Starts it (again); `extra` arguments come last, so they override the same flags given at creation. */
  async start(extra: string[] = []): Promise<void> {
    this.proc = startNode(`${this.name}#${++this.starts}`, this.bin, [...this.args, ...extra]);
    const listening = await this.proc.waitForMsg("listening", 30_000);
    if (typeof listening["serverName"] === "string") this.serverName = listening["serverName"];
  }

  async kill(): Promise<void> {
    if (!this.proc.alive()) return;
    this.proc.child.kill("SIGKILL");
    await this.proc.exited;
  }
}

/** The mesh's folders: PKI and tokens (meshtls certs/token), the identity service's own issuer folder, the registry file. */
export interface MeshFiles {
  dir: string;
  material: Material;
  /** The identity service's `--issuer-dir` (a copy of the first issuer). */
  issuerDir: string;
  /** The bundle every component follows (`ca.crt` of the material: rewritten to rotate anchors). */
  trustAnchorsFile: string;
  registryFile: string;
}

export async function createMeshFiles(prefix: string): Promise<MeshFiles> {
  const dir = tempDir(prefix);
  const material = await createMaterial(dir);
  const issuerDir = path.join(dir, "issuer");
  mkdirSync(issuerDir);
  copyFileSync(path.join(dir, "issuer.crt"), path.join(issuerDir, "issuer.crt"));
  copyFileSync(path.join(dir, "issuer.key"), path.join(issuerDir, "issuer.key"));
  const registryFile = path.join(dir, "registry.yaml");
  writeFileSync(registryFile, "services: []\n");
  return { dir, material, issuerDir, trustAnchorsFile: material.caFile, registryFile };
}

/** Replaces a file whole (write then rename), as editors and ConfigMap volumes do. */
export function replaceFile(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

/** `meshtls-identity` on fixed loopback ports, TLS, `--issuance-lifetime` as given (no clock skew, so leaves live exactly that long). */
export async function createIdentity(files: MeshFiles, options: { lifetime: string }): Promise<ControlPlaneProcess> {
  const grpc = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const admin = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const identity = new ControlPlaneProcess("identity", bins.identity, [
    "--trust-anchors", files.trustAnchorsFile,
    "--issuer-dir", files.issuerDir,
    "--token-jwks", files.material.jwksFile,
    "--token-issuer", "https://meshtls.local",
    "--listen", grpc,
    "--admin", admin,
    "--issuance-lifetime", options.lifetime,
    "--clock-skew", "0s",
    "--issuer-poll-interval", "1s",
    "--trust-anchors-poll-interval", "1s",
  ], grpc, admin, { tls: true });
  await identity.start();
  return identity;
}

/** `meshtls-destination` (file registry, plaintext, the policy API beside it) on fixed loopback ports. */
export async function createDestination(files: MeshFiles): Promise<ControlPlaneProcess & { policy: string }> {
  const grpc = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const policy = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const admin = `127.0.0.1:${await freePort("127.0.0.1")}`;
  const destination = Object.assign(
    new ControlPlaneProcess("destination", bins.destination, [
      "--registry", files.registryFile,
      "--listen", grpc,
      "--policy-addr", policy,
      "--admin", admin,
      "--insecure-plaintext",
      "--cluster-networks", "127.0.0.0/8",
    ], grpc, admin, { tls: false }),
    { policy },
  );
  await destination.start();
  return destination;
}

/**
 * A workload's app: `GET /` answers `<name> ok`; `GET /slow?ms=N` sends its head and a first chunk at
 * once and ends with `ok` N ms later (a request still in flight when something is killed).
 */
export async function startApp(host: string, name: string): Promise<{ server: http.Server; port: number; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://app");
    if (url.pathname === "/slow") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.write(`${name} `);
      setTimeout(() => res.end("ok\n"), Number(url.searchParams.get("ms") ?? 500));
      return;
    }
    res.end(`${name} ok\n`);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return { server, port, close };
}

export interface RegistryEndpoint {
  address: string;
  sa: string;
  /** The endpoint's proxy inbound port. */
  inboundPort: number;
}

export interface RegistryService {
  name: string;
  targetPort: number;
  endpoints: RegistryEndpoint[];
}

/**
 * The registry file's text: services (port 80 → targetPort) and, with `policy`, workload `b-0` (label app: b)
 * and the Server/authorization lines given.
 */
export function registryText(services: RegistryService[], policy?: string): string {
  const lines = ["services:"];
  for (const service of services) {
    lines.push(`  - name: ${service.name}`, `    ports: [{ port: 80, targetPort: ${service.targetPort} }]`, "    endpoints:");
    for (const e of service.endpoints) lines.push(`      - { address: ${e.address}, serviceAccount: ${e.sa}, inboundPort: ${e.inboundPort} }`);
  }
  if (policy !== undefined) lines.push("workloads:", "  - name: b-0", "    namespace: default", "    labels: { app: b }", policy);
  return `${lines.join("\n")}\n`;
}

/** The port of `host:port`. */
export const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));

/** GET on a proxy's admin port: status and body, or undefined when nothing answered. */
export async function adminGet(admin: string, pathname: string): Promise<{ status: number; text: string } | undefined> {
  try {
    const res = await fetch(`http://${admin}${pathname}`, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, text: await res.text() };
  } catch {
    return undefined;
  }
}

/** `POST /renew` on a proxy's admin port: resolves once the proxy serves with a new certificate. */
export async function renew(admin: string): Promise<void> {
  const res = await fetch(`http://${admin}/renew`, { method: "POST", signal: AbortSignal.timeout(20_000) });
  if (res.status !== 200) throw new Error(`POST /renew on ${admin}: ${res.status} ${await res.text()}`);
}

/** The sum of a metric's samples whose line contains every fragment. */
export function metricSum(metrics: string, name: string, ...fragments: string[]): number {
  let sum = 0;
  for (const line of metrics.split("\n")) {
    if ((line.startsWith(`${name}{`) || line.startsWith(`${name} `)) && fragments.every((f) => line.includes(f))) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** The RSS of every given process, summed (KiB). */
export const rssOf = (procs: readonly Proc[]): number => procs.reduce((sum, p) => sum + p.rssKiB(), 0);

export const SERVICE_B = "b.default.svc.cluster.local";
export const authorityB = `${SERVICE_B}:80`;
