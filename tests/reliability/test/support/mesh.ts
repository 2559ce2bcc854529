// A small mesh on loopback whose control plane can be killed and brought back on the same ports:
// the hostile suite's PKI, process and proxy helpers, with restartable identity and destination services.
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { createMaterial, identityOf, startProxy } from "@meshtls/hostile-suite/test/support/mesh.ts";
import type { Material, ProxyProcess, Service } from "@meshtls/hostile-suite/test/support/mesh.ts";
import { bins, freePort, poll, startNode, stopAll as stopAllProcesses, tempDir } from "@meshtls/hostile-suite/test/support/processes.ts";
import { requestVia } from "./traffic.ts";
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
export async function startApp(host: string, name: string, port = 0): Promise<{ server: http.Server; port: number; close: () => Promise<void> }> {
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
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, resolve));
  const bound = (server.address() as net.AddressInfo).port;
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return { server, port: bound, close };
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

/** One endpoint of service b: its app and its proxy. */
export interface Endpoint {
  ip: string;
  app: Awaited<ReturnType<typeof startApp>>;
  proxy: ProxyProcess;
}

export interface Mesh {
  files: MeshFiles;
  identity: ControlPlaneProcess;
  destination: ControlPlaneProcess & { policy: string };
  /** The client's proxy (ServiceAccount a): traffic enters at its outbound. */
  a: ProxyProcess;
  /** Service b's endpoints (ServiceAccount b), on 127.0.<net>.1, .2, … */
  b: Endpoint[];
  /** Service b as the registry says now, with the given endpoints (default all) and policy lines. */
  registry(options?: { endpoints?: Endpoint[]; policy?: string }): string;
  /** Every proxy's process. */
  proxies(): Proc[];
  close(): Promise<void>;
}

/**
 * Identity, destination (file registry), proxy A on 127.0.`net`.100 and `endpoints` endpoints of service b,
 * ready once A reaches b. `proxyArgs` are added to B's proxies (e.g. the policy controller's flags).
 */
export async function startMesh(options: { name: string; net: number; endpoints: number; lifetime?: string; proxyArgs?: (ip: string, policyAddr: string) => string[]; clientArgs?: string[]; policy?: (appPort: number) => string }): Promise<Mesh> {
  const files = await createMeshFiles(options.name);
  const identity = await createIdentity(files, { lifetime: options.lifetime ?? "24h" });
  const destination = await createDestination(files);
  // Every endpoint's app on the same port (the registry has one targetPort per service), each on its own address.
  const appPort = await freePort(`127.0.${options.net}.1`);
  const b = await Promise.all(
    Array.from({ length: options.endpoints }, async (_, i): Promise<Endpoint> => {
      const ip = `127.0.${options.net}.${i + 1}`;
      const app = await startApp(ip, `b${i + 1}`, appPort);
      const proxy = await startProxy(files.material, { name: `proxy-b${i + 1}`, sa: "b", ip, workloadPort: app.port, identity, destination, extra: options.proxyArgs?.(ip, destination.policy) ?? [] });
      return { ip, app, proxy };
    }),
  );
  const a = await startProxy(files.material, { name: "proxy-a", sa: "a", ip: `127.0.${options.net}.100`, workloadPort: 1, identity, destination, extra: options.clientArgs ?? [] });
  const targetPort = appPort;
  const registry = (r: { endpoints?: Endpoint[]; policy?: string } = {}): string =>
    registryText([{ name: "b", targetPort, endpoints: (r.endpoints ?? b).map((e) => ({ address: e.ip, sa: "b", inboundPort: portOf(e.proxy.inbound) })) }], r.policy ?? options.policy?.(appPort));
  replaceFile(files.registryFile, registry());
  const mesh: Mesh = {
    files,
    identity,
    destination,
    a,
    b,
    registry,
    proxies: () => [a.proc, ...b.map((e) => e.proxy.proc)],
    async close() {
      await Promise.all(b.map((e) => e.app.close()));
      await stopAllProcesses();
    },
  };
  // Up once every endpoint has answered (each proxy holds its certificate and, with a policy controller, its policy)
  // and a whole batch of requests succeeded.
  const seen = new Set<string>();
  const up = await poll(async () => {
    const batch = await Promise.all(Array.from({ length: 10 }, () => requestVia(a.outbound, authorityB)));
    for (const o of batch) if (o.ok) seen.add(o.result);
    return batch.every((o) => o.ok) && seen.size >= b.length ? true : undefined;
  }, 60_000, 300);
  if (up !== true) throw new Error(`A never reached every endpoint of b (answered: ${[...seen].join(", ")}): the mesh did not come up`);
  return mesh;
}

/** What a proxy logged about its failed outbound requests since line `since`: each distinct error and its count. */
export function outboundErrors(proc: Proc, since: number): string {
  const counts = new Map<string, number>();
  for (const line of proc.lines.slice(since)) {
    if (line.msg !== "outbound HTTP request failed") continue;
    const key = `${String(line["code"])}: ${String(line["err"]).replace(/\d+\.\d+\.\d+\.\d+:\d+/g, "ADDR")}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}× ${k}`).join("; ");
}
