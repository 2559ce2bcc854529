import { renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, sample, scrape, startNode, tempDir } from "./harness.ts";
import type { Material, Proc } from "./harness.ts";

const A = identityOf("a");
const WORKLOAD_B = JSON.stringify({ ns: "default", pod: "b-0" });

/** One request on a new connection: true when the app answered. */
function request(options: { host: string; port: number; path: string; proxy?: boolean }): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request(
      { host: options.host, port: options.port, path: options.path, agent: false, timeout: 3000, headers: options.proxy === true ? { host: "b.default.svc.cluster.local" } : {} },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += String(c)));
        res.on("end", () => resolve(res.statusCode === 200 && body.startsWith("b says")));
        res.on("error", () => resolve(false));
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
    req.end();
  });
}

/** The sum of a metric's series (`name` a regular expression over metric names) whose labels contain every fragment. */
function total(metrics: string, name: string, ...fragments: string[]): number {
  let sum = 0;
  const series = new RegExp(`^${name}\\{`);
  for (const line of metrics.split("\n")) {
    if (series.test(line) && fragments.every((f) => line.includes(f))) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

interface Outcome {
  at: number;
  ok: boolean;
}

/** Requests one after another until stopped, each outcome with the time it was sent. */
function loop(send: () => Promise<boolean>): { outcomes: Outcome[]; stop: () => Promise<void> } {
  const outcomes: Outcome[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const at = Date.now();
      outcomes.push({ at, ok: await send() });
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    outcomes,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe("meshtls-proxy follows the policy controller (real processes on loopback)", () => {
  const procs: Proc[] = [];
  const servers: net.Server[] = [];
  let dir: string;
  let material: Material;
  let registryFile: string;
  let appPort: number;

  /** The registry: B's service and workload, and the policy of B's app port for this step. */
  const registry = (bInbound: number, policy: string): string =>
    [
      "services:",
      "  - name: b",
      `    ports: [{ port: 80, targetPort: ${appPort} }]`,
      `    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bInbound} }]`,
      "workloads:",
      "  - name: b-0",
      "    namespace: default",
      "    labels: { app: b }",
      policy,
      "",
    ].join("\n");
  const steps = {
    "all-unauthenticated": "    defaultPolicy: all-unauthenticated",
    "only A": [
      "servers:",
      "  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: PORT, accessPolicy: deny }",
      "authorizationPolicies:",
      "  - name: b-from-a",
      "    namespace: default",
      "    targetRef: { kind: Server, name: b-http }",
      "    requiredAuthenticationRefs: [{ kind: MeshTLSAuthentication, name: a-only }]",
      "meshTLSAuthentications:",
      `  - { name: a-only, namespace: default, identities: ["${A}"] }`,
    ].join("\n"),
    deny: ["servers:", "  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: PORT, accessPolicy: deny }"].join("\n"),
    "all-authenticated": ["servers:", "  - { name: b-http, namespace: default, podSelector: { matchLabels: { app: b } }, port: PORT, accessPolicy: all-authenticated }"].join("\n"),
  } as const;

  const write = (text: string): void => {
    // Replaced whole, as editors and ConfigMap volumes do.
    writeFileSync(`${registryFile}.tmp`, text);
    renameSync(`${registryFile}.tmp`, registryFile);
  };

  async function startProxy(name: string, sa: string, ip: string, workloadPort: number, destinationAddr: string, identity: { addr: string; name: string }, extra: string[]) {
    const proxy = startNode(name, bins.proxy, [
      "--identity", identityOf(sa),
      "--token-file", await material.tokenFile(sa),
      "--trust-anchors", material.caFile,
      "--identity-addr", identity.addr,
      "--identity-name", identity.name,
      "--destination-addr", destinationAddr,
      "--destination-insecure-plaintext",
      "--context-token", '{"ns":"default"}',
      "--inbound", `${ip}:0`,
      "--outbound", `${ip}:0`,
      "--admin", `${ip}:0`,
      "--workload", `${ip}:${workloadPort}`,
      "--outbound-bind", ip,
      "--drain-timeout", "1s",
      ...extra,
    ]);
    procs.push(proxy);
    const listening = await proxy.waitForMsg("listening");
    await proxy.waitForMsg("first certificate obtained: ready");
    return { proxy, inbound: String(listening["inbound"]), outbound: String(listening["outbound"]), admin: String(listening["admin"]) };
  }

  let a: Awaited<ReturnType<typeof startProxy>>;
  let b: Awaited<ReturnType<typeof startProxy>>;
  let bInbound: number;

  beforeAll(async () => {
    dir = tempDir("meshtls-proxy-policy-");
    material = await createMaterial(dir);
    const identity = startNode("identity", bins.identity, [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    ]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");

    const app = http.createServer((req, res) => res.end(`b says ${req.url ?? ""}\n`));
    servers.push(app);
    await new Promise<void>((r) => app.listen(0, "127.0.1.2", r));
    appPort = (app.address() as net.AddressInfo).port;

    registryFile = path.join(dir, "registry.yaml");
    bInbound = await freePort("127.0.1.2");
    write(registry(bInbound, steps["all-unauthenticated"]));
    const destination = startNode("destination", bins.destination, ["--registry", registryFile, "--listen", "127.0.0.1:0", "--policy-addr", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext", "--cluster-networks", "127.0.0.0/8"]);
    procs.push(destination);
    const listening = await destination.waitForMsg("listening");
    const destinationAddr = String(listening["grpcAddress"]);
    const policyAddr = String(listening["policyAddress"]);
    const ids = { addr: String(idListening["grpc"]), name: String(idListening["serverName"]) };

    // B starts from deny: nothing gets in until the controller's answer says otherwise.
    b = await startProxy("proxy-b", "b", "127.0.1.2", appPort, destinationAddr, ids, [
      "--inbound", `127.0.1.2:${bInbound}`, "--policy-addr", policyAddr, "--workload-name", WORKLOAD_B, "--default-policy", "deny",
    ]);
    a = await startProxy("proxy-a", "a", "127.0.1.1", 1, destinationAddr, ids, []);
  }, 120_000);

  afterAll(async () => {
    for (const server of servers) server.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  it("four policy edits while traffic runs: each takes effect within a second, from the clients and the metrics; same pid; A's allowed requests never fail", async () => {
    const [aHost = "", aPort = "0"] = a.outbound.split(":");
    const [bHost = "", bPort = "0"] = b.inbound.split(":");
    const fromA = () => request({ host: aHost, port: Number(aPort), path: "http://b.default.svc.cluster.local/from-a", proxy: true });
    const plain = () => request({ host: bHost, port: Number(bPort), path: "/plain" });
    const pid = b.proxy.child.pid;

    // The first answer (all-unauthenticated) replaces B's deny default.
    const ready = Date.now();
    while (!((await fromA()) && (await plain()))) {
      if (Date.now() - ready > 15_000) throw new Error(`B never served under the controller's all-unauthenticated: ${JSON.stringify(b.proxy.lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const aLoop = loop(fromA);
    const plainLoop = loop(plain);

    // Each step's decisions are told apart in /metrics by the server and, when allowed, the authorization.
    const sequence: { name: keyof typeof steps; a: boolean; plain: boolean; srv: string; authz: string }[] = [
      { name: "only A", a: true, plain: false, srv: 'srv_kind="server",srv_name="b-http"', authz: 'authz_kind="authorizationpolicy",authz_name="b-from-a"' },
      { name: "deny", a: false, plain: false, srv: 'srv_kind="server",srv_name="b-http"', authz: 'reason="deny"' },
      { name: "all-authenticated", a: true, plain: false, srv: 'srv_kind="server",srv_name="b-http"', authz: 'authz_kind="default",authz_name="all-authenticated"' },
      { name: "all-unauthenticated", a: true, plain: true, srv: 'srv_kind="default",srv_name="all-unauthenticated"', authz: "" },
    ];
    const report: string[] = [];
    const edits: { name: string; at: number; aMs: number }[] = [];
    for (const step of sequence) {
      await new Promise((r) => setTimeout(r, 1500));
      const before = await scrape(b.admin);
      const editedAt = Date.now();
      write(registry(bInbound, steps[step.name].replaceAll("PORT", String(appPort))));
      // Observed from the metrics: the first scrape that counts a decision under the new server's name.
      // A connection is decided once; each HTTP request on a kept-alive one again, under the policy then.
      const decisions = step.a || step.plain ? "inbound_(tcp|http)_authz_allow_total" : "inbound_(tcp|http)_authz_deny_total";
      let metricsMs = Infinity;
      while (Date.now() - editedAt < 2000) {
        const text = await scrape(b.admin);
        if (metricsMs === Infinity && total(text, decisions, step.srv, step.authz) > total(before, decisions, step.srv, step.authz)) metricsMs = Date.now() - editedAt;
        await new Promise((r) => setTimeout(r, 50));
      }
      // Observed from the clients: the first request sent after which every outcome matches the new policy.
      const settled = (outcomes: Outcome[], expected: boolean): number => {
        const after = outcomes.filter((o) => o.at >= editedAt);
        let from = after.length;
        while (from > 0 && after[from - 1]?.ok === expected) from--;
        expect(from, `${step.name}: the last outcomes are not ${String(expected)}`).toBeLessThan(after.length);
        return (after[from]?.at ?? Infinity) - editedAt;
      };
      const aMs = settled(aLoop.outcomes, step.a);
      const plainMs = settled(plainLoop.outcomes, step.plain);
      edits.push({ name: step.name, at: editedAt, aMs });
      const after = await scrape(b.admin);
      const counted = total(after, decisions, step.srv, step.authz) - total(before, decisions, step.srv, step.authz);
      report.push(`${step.name}: A ${step.a ? "allowed" : "denied"} after ${aMs} ms, plaintext ${step.plain ? "allowed" : "denied"} after ${plainMs} ms, in /metrics after ${metricsMs} ms (${counted} decisions under ${step.srv}${step.authz === "" ? "" : `,${step.authz}`})`);
      expect(Math.max(aMs, plainMs, metricsMs), step.name).toBeLessThan(1000);
      expect(counted).toBeGreaterThan(0);
    }
    await aLoop.stop();
    await plainLoop.stop();
    console.log(`policy steps (A ${aLoop.outcomes.length} requests, plaintext ${plainLoop.outcomes.length}):\n  ${report.join("\n  ")}`);

    // A's requests fail only while deny was in force: from the deny edit (a request open then is closed
    // with its connection, so up to a request timeout before) until all-authenticated took effect.
    const deny = edits.find((e) => e.name === "deny");
    const reopened = edits.find((e) => e.name === "all-authenticated");
    const outside = aLoop.outcomes.filter((o) => !o.ok && (o.at < (deny?.at ?? 0) - 3000 || o.at >= (reopened?.at ?? 0) + (reopened?.aMs ?? 0)));
    expect(outside).toEqual([]);
    expect(b.proxy.child.pid).toBe(pid);
    expect(b.proxy.child.exitCode).toBeNull();
    const text = await scrape(b.admin);
    expect(sample(text, "inbound_tcp_authz_deny_total", 'srv_name="b-http"', 'reason="unauthenticated"')).toBeGreaterThan(0);
    expect(total(text, "inbound_(tcp|http)_authz_allow_total", 'srv_name="b-http"', 'authz_kind="authorizationpolicy"', 'authz_name="b-from-a"', `target_addr="127.0.1.2:${appPort}"`)).toBeGreaterThan(0);
  }, 120_000);
});
