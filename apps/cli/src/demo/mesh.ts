import { copyFile, mkdir, rename, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createCerts } from "../commands/certs-create.ts";
import { generateTokenSigner, TOKEN_JWKS_FILE, TOKEN_SIGNER_KEY_FILE } from "../commands/token-keygen.ts";
import { DEFAULT_TOKEN_ISSUER, mintToken } from "../commands/token-mint.ts";
import { CliError } from "../errors.ts";
import { locateBinary } from "../mesh/binaries.ts";
import { startProcess, type LogLine, type ManagedProcess } from "../mesh/supervisor.ts";
import { createMemoryOutput } from "../output.ts";

/** How long a component may take to start and report itself (30 s on a loaded machine). */
export const DEFAULT_START_TIMEOUT_MS = 30_000;
/** Namespace of the demo's workloads. */
export const DEMO_NAMESPACE = "default";

/** The programs a local mesh runs. Default: the CLI's app dependencies and its built workload app. */
export interface MeshBinaries {
  identity: string;
  destination: string;
  proxy: string;
  /** The built `workload-app.js`. */
  workloadApp: string;
}

export function defaultBinaries(): MeshBinaries {
  return {
    identity: locateBinary("meshtls-identity"),
    destination: locateBinary("meshtls-destination"),
    proxy: locateBinary("meshtls-proxy"),
    // Beside the running bundle (dist/main.js → dist/workload-app.js).
    workloadApp: path.join(path.dirname(fileURLToPath(import.meta.url)), "workload-app.js"),
  };
}

export interface LocalMeshOptions {
  /** Folder for certificates, tokens and the registry (created if missing, not removed). */
  dir: string;
  /** Lifetime of workload certificates issued by the identity service. */
  leafLifetimeMs: number;
  /** Clock-skew allowance of the identity service. Default 2 s (everything runs on one clock). */
  skewMs?: number;
  binaries?: MeshBinaries;
  /** Called with every process started (name, pid). */
  onStart?: (proc: ManagedProcess) => void;
  startTimeoutMs?: number;
}

export interface IdentityService {
  proc: ManagedProcess;
  grpcAddress: string;
  adminAddress: string;
  /** The identity its TLS certificate names (proxies verify it). */
  serverName: string;
}

export interface Workload {
  name: string;
  /** The ServiceAccount, also the service name. */
  serviceAccount: string;
  identity: string;
  ip: string;
  appPort: number;
  app: ManagedProcess;
  proxy: ManagedProcess;
  inbound: string;
  outbound: string;
  admin: string;
  /** Its proxy's `--tap-addr` listener, when it has one. */
  tap?: string;
  policy: string;
}

export interface StartWorkloadOptions {
  name: string;
  /** Loopback address of its own (127.0.1.x), so its connections are told apart. */
  ip: string;
  /** Inbound policy of its proxy. Default `all-unauthenticated`. */
  policy?: string;
  /** Another service this workload calls through its proxy, e.g. `api` (port 80). */
  calls?: string;
  callIntervalMs?: number;
  /** More flags for its proxy (e.g. `--tap-addr`, `--tap-allow`). */
  proxyArgs?: string[];
}

/**
 * A mesh on loopback for the demo and the process tests: anchor, issuer and
 * token signer made in process, then real `meshtls-identity`,
 * `meshtls-destination` and per-workload `meshtls-proxy` + app processes,
 * each in its own process group. Files: `certs/` (ca.crt, ca.key),
 * `issuer/` (issuer.crt, issuer.key: the identity service's issuer folder),
 * `trust-anchors.crt` (the bundle every component reads), `tokens/`,
 * `registry.yaml`.
 */
export class LocalMesh {
  readonly dir: string;
  readonly certsDir: string;
  readonly issuerDir: string;
  readonly bundleFile: string;
  readonly registryFile: string;
  readonly workloads = new Map<string, Workload>();
  /** Each workload's inbound policy as the registry file gives it to the policy controller. */
  private readonly policies = new Map<string, string>();
  identity: IdentityService | undefined;
  destination: { proc: ManagedProcess; grpcAddress: string; policyAddress: string } | undefined;
  private readonly processes = new Set<ManagedProcess>();
  private stopped = false;
  private readonly binaries: MeshBinaries;
  private readonly startTimeoutMs: number;
  /** One port for the identity service's whole life, so that it can be restarted where the proxies look for it. */
  private identityPort: number | undefined;

  private constructor(private readonly options: LocalMeshOptions) {
    this.dir = options.dir;
    this.certsDir = path.join(options.dir, "certs");
    this.issuerDir = path.join(options.dir, "issuer");
    this.bundleFile = path.join(options.dir, "trust-anchors.crt");
    this.registryFile = path.join(options.dir, "registry.yaml");
    this.binaries = options.binaries ?? defaultBinaries();
    this.startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  }

  /** Writes the mesh's files (anchor, issuer, bundle, token signer, empty registry). */
  static async create(options: LocalMeshOptions): Promise<LocalMesh> {
    const mesh = new LocalMesh(options);
    const quiet = createMemoryOutput();
    await createCerts({ outDir: mesh.certsDir }, quiet);
    await mkdir(mesh.issuerDir, { recursive: true });
    await copyFile(path.join(mesh.certsDir, "issuer.crt"), path.join(mesh.issuerDir, "issuer.crt"));
    await copyFile(path.join(mesh.certsDir, "issuer.key"), path.join(mesh.issuerDir, "issuer.key"));
    await copyFile(path.join(mesh.certsDir, "ca.crt"), mesh.bundleFile);
    await generateTokenSigner({ outDir: path.join(mesh.dir, "tokens") }, quiet);
    await writeFile(mesh.registryFile, "services: []\n");
    return mesh;
  }

  identityName(serviceAccount: string): string {
    return `${serviceAccount}.${DEMO_NAMESPACE}.serviceaccount.identity.meshtls.cluster.local`;
  }

  private start(name: string, file: string, args: string[]): ManagedProcess {
    // A start still under way when the mesh is stopped must not leave a process behind.
    if (this.stopped) throw new CliError("ERR_MESH", `not starting ${name}: the mesh is stopping`);
    const proc = startProcess({ name, file: process.execPath, args: [file, ...args] });
    this.processes.add(proc);
    void proc.exited.then(() => this.processes.delete(proc));
    this.options.onStart?.(proc);
    return proc;
  }

  private waitMsg(proc: ManagedProcess, msg: string, what: string): Promise<LogLine> {
    return proc.waitFor((line) => line.msg === msg, { timeoutMs: this.startTimeoutMs, what });
  }

  /** Starts (or restarts) the identity service on its fixed loopback port, reading the bundle file as it is now. */
  async startIdentity(): Promise<IdentityService> {
    this.identityPort ??= await freePort("127.0.0.1");
    const port = this.identityPort;
    const proc = this.start("meshtls-identity", this.binaries.identity, [
      "--trust-anchors", this.bundleFile,
      "--issuer-dir", this.issuerDir,
      "--token-jwks", path.join(this.dir, "tokens", TOKEN_JWKS_FILE),
      "--token-issuer", DEFAULT_TOKEN_ISSUER,
      "--listen", `127.0.0.1:${port}`,
      "--admin", "127.0.0.1:0",
      "--issuance-lifetime", `${Math.round(this.options.leafLifetimeMs / 1000)}s`,
      "--clock-skew", `${Math.round((this.options.skewMs ?? 2_000) / 1000)}s`,
      "--issuer-poll-interval", "1s",
    ]);
    const listening = await this.waitMsg(proc, "listening", "that it is listening");
    this.identity = { proc, grpcAddress: String(listening.grpc), adminAddress: String(listening.admin), serverName: String(listening.serverName) };
    return this.identity;
  }

  async stopIdentity(): Promise<void> {
    await this.identity?.proc.stop();
  }

  async startDestination(): Promise<void> {
    const proc = this.start("meshtls-destination", this.binaries.destination, [
      "--registry", this.registryFile,
      "--listen", "127.0.0.1:0",
      "--admin", "127.0.0.1:0",
      "--policy-addr", "127.0.0.1:0",
      "--insecure-plaintext",
    ]);
    const listening = await this.waitMsg(proc, "listening", "that it is listening");
    this.destination = { proc, grpcAddress: String(listening.grpcAddress), policyAddress: String(listening.policyAddress) };
  }

  /** An app and its proxy on `ip`; the registry is rewritten to include it. */
  async startWorkload(options: StartWorkloadOptions): Promise<Workload> {
    if (this.identity === undefined || this.destination === undefined) {
      throw new CliError("ERR_MESH", "start the identity and destination services before workloads");
    }
    const serviceAccount = options.name;
    const tokenFile = await this.mintToken(serviceAccount);
    const appPort = await freePort(options.ip);
    const policy = options.policy ?? "all-unauthenticated";
    // Known to the policy controller before its proxy asks, so the first WatchPort is answered (not NOT_FOUND and a retry).
    this.policies.set(options.name, policy);
    await this.writeRegistry();
    // The proxy picks its own inbound and outbound ports (no window for another process to take them); the app learns the outbound one below.
    const proxy = this.startProxy({ name: options.name, ip: options.ip, appPort, tokenFile, policy, inbound: `${options.ip}:0`, outbound: `${options.ip}:0`, extra: options.proxyArgs ?? [] });
    const listening = await this.waitMsg(proxy, "listening", "that it is listening");
    await this.waitMsg(proxy, "first certificate obtained: ready", "its first certificate");
    const appArgs = ["--name", options.name, "--listen", `${options.ip}:${appPort}`];
    if (options.calls !== undefined) {
      appArgs.push("--call", `http://${options.calls}.${DEMO_NAMESPACE}.svc.cluster.local/`, "--via", String(listening.outbound), "--interval-ms", String(options.callIntervalMs ?? 500));
    }
    const app = this.start(`${options.name} app`, this.binaries.workloadApp, appArgs);
    await this.waitMsg(app, "listening", "that it is listening");
    const workload: Workload = {
      name: options.name,
      serviceAccount,
      identity: this.identityName(serviceAccount),
      ip: options.ip,
      appPort,
      app,
      proxy,
      inbound: String(listening.inbound),
      outbound: String(listening.outbound),
      admin: String(listening.admin),
      ...(listening.tap === undefined ? {} : { tap: String(listening.tap) }),
      policy,
    };
    this.workloads.set(options.name, workload);
    await this.writeRegistry();
    return workload;
  }

  /**
   * Changes a workload's inbound policy the way a control plane does: its
   * `defaultPolicy` in the registry file, which the destination service's
   * policy controller sends to the proxy's open WatchPort streams (no restart).
   */
  async setPolicy(name: string, policy: string): Promise<Workload> {
    const workload = this.workloads.get(name);
    if (workload === undefined) throw new CliError("ERR_MESH", `no workload ${name}`);
    workload.policy = policy;
    this.policies.set(name, policy);
    await this.writeRegistry();
    return workload;
  }

  private startProxy(o: { name: string; ip: string; appPort: number; tokenFile: string; policy: string; inbound: string; outbound: string; extra?: string[] }): ManagedProcess {
    return this.start(`${o.name} proxy`, this.binaries.proxy, [
      "--identity", this.identityName(o.name),
      "--token-file", o.tokenFile,
      "--trust-anchors", this.bundleFile,
      "--trust-anchors-poll-interval", "500ms",
      "--identity-addr", this.identity!.grpcAddress,
      "--identity-name", this.identity!.serverName,
      "--destination-addr", this.destination!.grpcAddress,
      "--destination-insecure-plaintext",
      "--policy-addr", this.destination!.policyAddress,
      "--workload-name", JSON.stringify({ ns: DEMO_NAMESPACE, pod: o.name }),
      "--context-token", JSON.stringify({ ns: DEMO_NAMESPACE }),
      "--inbound", o.inbound,
      "--outbound", o.outbound,
      "--admin", `${o.ip}:0`,
      "--workload", `${o.ip}:${o.appPort}`,
      "--outbound-bind", o.ip,
      "--default-policy", o.policy,
      "--drain-timeout", "1s",
      ...(o.extra ?? []),
    ]);
  }

  private async mintToken(serviceAccount: string): Promise<string> {
    const output = createMemoryOutput();
    const token = await mintToken(
      { keyFile: path.join(this.dir, "tokens", TOKEN_SIGNER_KEY_FILE), namespace: DEMO_NAMESPACE, serviceAccount },
      output,
    );
    const file = path.join(this.dir, "tokens", `${serviceAccount}.token`);
    await writeFile(file, token, { mode: 0o600 });
    return file;
  }

  /**
   * Every workload as a service on port 80, its endpoint meshed with its
   * inbound port, and as a policy workload (pod name = workload name) whose
   * `defaultPolicy` is its current policy.
   */
  async writeRegistry(): Promise<void> {
    const lines = [this.workloads.size === 0 ? "services: []" : "services:"];
    for (const w of this.workloads.values()) {
      const inboundPort = w.inbound.slice(w.inbound.lastIndexOf(":") + 1);
      lines.push(
        `  - name: ${w.name}`,
        `    namespace: ${DEMO_NAMESPACE}`,
        `    ports: [{ port: 80, targetPort: ${w.appPort} }]`,
        `    endpoints: [{ address: ${w.ip}, serviceAccount: ${w.serviceAccount}, inboundPort: ${inboundPort} }]`,
      );
    }
    lines.push(this.policies.size === 0 ? "workloads: []" : "workloads:");
    for (const [name, policy] of this.policies) lines.push(`  - { name: ${name}, namespace: ${DEMO_NAMESPACE}, defaultPolicy: ${policy} }`);
    // Replace the file in one step: the destination service never reads half of it.
    const temp = `${this.registryFile}.tmp`;
    await writeFile(temp, `${lines.join("\n")}\n`);
    await rename(temp, this.registryFile);
  }

  /** Every process still running, for checks. */
  running(): ManagedProcess[] {
    return [...this.processes];
  }

  /** Stops every process (apps first, then proxies, then the control plane), each group SIGTERM then SIGKILL. */
  async stop(): Promise<void> {
    this.stopped = true;
    const all = [...this.processes];
    const apps = all.filter((p) => p.name.endsWith(" app"));
    const proxies = all.filter((p) => p.name.endsWith(" proxy"));
    const rest = all.filter((p) => !apps.includes(p) && !proxies.includes(p));
    for (const group of [apps, proxies, rest]) {
      await Promise.all(group.map((p) => p.stop({ graceMs: 3_000 })));
    }
  }
}

/** A port free right now on `host` (bound and released). */
export async function freePort(host: string): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(new CliError("ERR_MESH", `cannot listen on ${host}: ${error.message}`, { cause: error })));
    server.listen(0, host, resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
