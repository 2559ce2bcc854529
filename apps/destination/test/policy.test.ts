import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminGet, bufCurl, startDestination, waitFor, type BufStream, type DestinationProcess } from "./support.js";

const INBOUND = "io.linkerd.proxy.inbound.InboundServerPolicies";

const registry = (webAccess: string) => `services: []
workloads:
  - name: web-0
    namespace: shop
    labels: { app: web }
    ports: [{ name: http, port: 8080 }]
servers:
  - name: web-http
    namespace: shop
    podSelector: { matchLabels: { app: web } }
    port: http
    proxyProtocol: HTTP/1
    accessPolicy: ${webAccess}
authorizationPolicies:
  - name: from-api
    namespace: shop
    targetRef: { kind: Server, name: web-http }
    requiredAuthenticationRefs: [{ kind: ServiceAccount, name: api, namespace: backend }]
`;

const WEB = JSON.stringify({ ns: "shop", pod: "web-0" });

describe("meshtls-destination's inbound policy API over buf curl (client built from the proto files only)", () => {
  let dir: string;
  let file: string;
  let server: DestinationProcess;
  let policyPort: number;
  const streams: BufStream[] = [];
  const call = (method: "GetPort" | "WatchPort", body: unknown): BufStream => {
    const s = bufCurl({ port: policyPort, method: `${INBOUND}/${method}`, body });
    streams.push(s);
    return s;
  };
  const write = (text: string): void => {
    // Replace the file whole, as editors and ConfigMap volumes do.
    writeFileSync(`${file}.tmp`, text);
    renameSync(`${file}.tmp`, file);
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-policy-"));
    file = path.join(dir, "registry.yaml");
    writeFileSync(file, registry("deny"));
    server = await startDestination({ registryFile: file, args: ["--insecure-plaintext", "--trust-domain", "example.org", "--default-inbound-policy", "all-authenticated"] });
    const listening = server.logs.find((l) => l.msg === "listening");
    policyPort = Number(String(listening?.policyAddress).split(":").pop());
    expect(policyPort).toBeGreaterThan(0);
    expect(policyPort).not.toBe(server.grpcPort);
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("GetPort: a port a Server selects gets that Server, its protocol and its authorizations", async () => {
    const s = call("GetPort", { workload: WEB, port: 8080 });
    expect((await s.exited).code, s.messages.length === 0 ? "no answer" : "").toBe(0);
    expect(s.messages[0]).toEqual({
      protocol: { http1: { routes: [{ metadata: { default: "default" }, rules: [{ matches: [{ path: { prefix: "/" } }] }] }] } },
      authorizations: [
        {
          networks: [
            { net: { ip: { ipv4: 0x0a000000 }, prefixLen: 8 } },
            { net: { ip: { ipv4: 0x64400000 }, prefixLen: 10 } },
            { net: { ip: { ipv4: 0xac100000 }, prefixLen: 12 } },
            { net: { ip: { ipv4: 0xc0a80000 }, prefixLen: 16 } },
            { net: { ip: { ipv6: { first: String(0xfdn << 56n) } }, prefixLen: 8 } },
          ],
          authentication: { meshTLS: { identities: { identities: [{ name: "api.backend.serviceaccount.identity.meshtls.example.org" }] } } },
          labels: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "from-api" },
          metadata: { resource: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "from-api" } },
        },
      ],
      labels: { group: "policy.linkerd.io", kind: "server", name: "web-http" },
    });
  });

  it("GetPort: a port without a Server gets the default policy (--default-inbound-policy)", async () => {
    const s = call("GetPort", { workload: WEB, port: 9000 });
    expect((await s.exited).code).toBe(0);
    const message = s.messages[0] as { protocol: { detect: { timeout: string } }; authorizations: unknown[]; labels: unknown };
    expect(message.labels).toEqual({ group: "", kind: "default", name: "all-authenticated" });
    expect(message.protocol.detect.timeout).toBe("10s");
    expect(message.authorizations).toEqual([
      {
        networks: [{ net: { ip: { ipv4: 0 } } }, { net: { ip: { ipv6: {} } } }],
        authentication: { meshTLS: { identities: { suffixes: [{}] } } },
        labels: { group: "", kind: "default", name: "all-authenticated" },
        metadata: { default: "all-authenticated" },
      },
    ]);
  });

  it("WatchPort: an edit reaches the open stream within a second; a broken edit changes nothing and is reported", async () => {
    const watch = call("WatchPort", { workload: WEB, port: 8080 });
    await waitFor(() => watch.messages[0], 15_000, "the first Server");
    expect((watch.messages[0]?.authorizations as unknown[]).length).toBe(1);

    const editedAt = Date.now();
    write(registry("all-unauthenticated"));
    await waitFor(() => watch.messages[1], 5_000, "the edited Server");
    const latencyMs = (watch.receivedAt[1] ?? 0) - editedAt;
    console.log(`policy edit → WatchPort message: ${latencyMs} ms`);
    expect(latencyMs).toBeLessThan(1_000);
    expect((watch.messages[1]?.authorizations as { metadata: unknown }[]).map((a) => a.metadata)).toEqual([
      { resource: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "from-api" } },
      { default: "all-unauthenticated" },
    ]);

    write(registry("allow-everyone"));
    const refused = await server.waitForLog((l) => String(l.msg).startsWith("registry not reloaded"), 5_000);
    expect(refused).toMatchObject({ code: "ERR_REGISTRY_INVALID", line: 13 });
    expect(String(refused.reason)).toContain('accessPolicy "allow-everyone" is not one of');
    const metrics = await adminGet(server.adminPort, "/metrics");
    expect(metrics.text).toMatch(/destination_registry_reloads_total\{result="error"\} [1-9]/);
    expect(metrics.text).toMatch(/destination_registry_file_valid 0/);
    await new Promise((r) => setTimeout(r, 500));
    expect(watch.messages).toHaveLength(2);
    const still = call("GetPort", { workload: WEB, port: 8080 });
    await still.exited;
    expect((still.messages[0]?.authorizations as unknown[]).length).toBe(2);

    write(registry("deny"));
    await waitFor(() => watch.messages[2], 5_000, "the Server after the fix");
    expect((watch.messages[2]?.authorizations as unknown[]).length).toBe(1);
  });

  it("malformed requests get INVALID_ARGUMENT (or RESOURCE_EXHAUSTED when oversized), unknown workloads NOT_FOUND; the server keeps serving", async () => {
    const cases: [unknown, string][] = [
      [{ workload: "not json {", port: 8080 }, "invalid_argument"],
      [{ workload: '{"ns":"shop"}', port: 8080 }, "invalid_argument"],
      [{ workload: WEB, port: 0 }, "invalid_argument"],
      [{ workload: WEB, port: 65536 }, "invalid_argument"],
      [{ workload: "x".repeat(4096), port: 8080 }, "invalid_argument"],
      [{ workload: "y".repeat(100_000), port: 8080 }, "resource_exhausted"],
      [{ workload: JSON.stringify({ ns: "shop", pod: "nope" }), port: 8080 }, "not_found"],
    ];
    for (const method of ["GetPort", "WatchPort"] as const) {
      for (const [body, code] of cases) {
        const { code: exit, stderr } = await call(method, body).exited;
        expect(exit, `${method} ${JSON.stringify(body).slice(0, 60)}`).not.toBe(0);
        expect(stderr, `${method} ${JSON.stringify(body).slice(0, 60)}`).toContain(`"code": "${code}"`);
        if (code === "not_found") expect(stderr).toContain("unknown server");
      }
    }
    const ok = call("GetPort", { workload: "shop:web-0", port: 8080 });
    expect((await ok.exited).code).toBe(0);
    const metrics = await adminGet(server.adminPort, "/metrics");
    expect(metrics.text).toMatch(/policy_requests_total\{method="get_port",result="invalid_argument"\} 5/);
    expect(metrics.text).toMatch(/policy_requests_total\{method="watch_port",result="not_found"\} 1/);
  });
});
