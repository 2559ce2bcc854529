import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addrsOf, bufCurlGet, ipv4Int, startDestination, waitFor, type BufStream, type DestinationProcess, type JsonAddr } from "./support.js";

const registryYaml = `services:
  - name: api
    namespace: default
    ports: [{ port: 80, targetPort: 8080 }]
    endpoints:
      - { address: 127.0.1.1, serviceAccount: api, pod: api-0 }    # meshed, inbound proxy on 4143
      - { address: 127.0.1.2, serviceAccount: api, inboundPort: 4243, pod: api-1 }
      - { address: 127.0.2.1, meshed: false, pod: legacy-0 }
  - name: db
    namespace: data
    endpoints:
      - { address: "fd00::5", serviceAccount: postgres }
`;

const API_ID = "api.default.serviceaccount.identity.meshtls.example.org";

describe("meshtls-destination over buf curl (client built from the proto files only)", () => {
  let dir: string;
  let server: DestinationProcess;
  const streams: BufStream[] = [];
  const get = (p: string, contextToken?: string): BufStream => {
    const s = bufCurlGet({ port: server.grpcPort, path: p, ...(contextToken === undefined ? {} : { contextToken }) });
    streams.push(s);
    return s;
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-get-"));
    writeFileSync(path.join(dir, "registry.yaml"), registryYaml);
    server = await startDestination({
      registryFile: path.join(dir, "registry.yaml"),
      args: ["--insecure-plaintext", "--trust-domain", "example.org"],
    });
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("first update for a meshed service: addresses, identities and inbound ports; unmeshed has no identity", async () => {
    const s = get("api.default.svc.cluster.local:80");
    await waitFor(() => s.messages[0], 15_000, "the first update");
    const addrs = addrsOf(s.messages[0], "add");
    const byIp = new Map(addrs.map((a) => [a.addr.ip.ipv4, a]));
    expect([...byIp.keys()].sort()).toEqual([ipv4Int("127.0.1.1"), ipv4Int("127.0.1.2"), ipv4Int("127.0.2.1")].sort());
    expect(addrs.every((a) => a.addr.port === 8080)).toBe(true);
    const one = byIp.get(ipv4Int("127.0.1.1"));
    expect(one?.tlsIdentity).toEqual({ dnsLikeIdentity: { name: API_ID }, serverName: { name: API_ID } });
    expect(one?.protocolHint).toEqual({ opaqueTransport: { inboundPort: 4143 } });
    expect(one?.metricLabels).toEqual({ pod: "api-0", serviceaccount: "api", control_plane_ns: "meshtls" });
    expect(byIp.get(ipv4Int("127.0.1.2"))?.protocolHint).toEqual({ opaqueTransport: { inboundPort: 4243 } });
    const unmeshed = byIp.get(ipv4Int("127.0.2.1"));
    expect(unmeshed?.tlsIdentity).toBeUndefined();
    expect(unmeshed?.protocolHint).toBeUndefined();
    expect((s.messages[0]?.add as { metricLabels: unknown }).metricLabels).toEqual({ namespace: "default", service: "api" });
  });

  it("resolves the short forms from the context token's namespace and encodes IPv6 as two halves", async () => {
    const short = get("api:80", JSON.stringify({ ns: "default", nodeName: "node-1", pod: "web-0" }));
    const db = get("db.data.svc:5432");
    await waitFor(() => (short.messages[0] && db.messages[0] ? true : undefined), 15_000, "the first updates");
    expect(addrsOf(short.messages[0], "add")).toHaveLength(3);
    const [v6] = addrsOf(db.messages[0], "add") as [JsonAddr];
    // fd00::5: first = 0xfd00 << 48, last = 5 (protojson prints 64-bit integers as strings).
    expect(v6.addr).toEqual({ ip: { ipv6: { first: String(0xfd00n << 48n), last: "5" } }, port: 5432 });
    expect(v6.tlsIdentity?.serverName?.name).toBe("postgres.data.serviceaccount.identity.meshtls.example.org");
  });

  it("an unknown service gets no_endpoints{exists:false}", async () => {
    const s = get("nope.default.svc.cluster.local:80");
    await waitFor(() => s.messages[0], 15_000, "the first update");
    // protojson omits false: {"noEndpoints": {}} is exists=false.
    expect(s.messages[0]).toEqual({ noEndpoints: {} });
  });

  it("a lookup by <ip>:<port> returns that endpoint with its identity", async () => {
    const s = get("127.0.1.2:8080");
    await waitFor(() => s.messages[0], 15_000, "the first update");
    const addrs = addrsOf(s.messages[0], "add");
    expect(addrs).toHaveLength(1);
    expect(addrs[0]?.addr).toEqual({ ip: { ipv4: ipv4Int("127.0.1.2") }, port: 8080 });
    expect(addrs[0]?.tlsIdentity?.dnsLikeIdentity?.name).toBe(API_ID);
    expect(addrs[0]?.protocolHint?.opaqueTransport?.inboundPort).toBe(4243);
  });

  it("malformed paths get INVALID_ARGUMENT", async () => {
    for (const bad of ["", "api:", "api:0", "api:99999", "a.b.c.d.e:80", "fd00::1:80", "[nope]:80", "a..b:80"]) {
      const { code, stderr } = await get(bad).exited;
      expect(code, bad).not.toBe(0);
      expect(stderr, bad).toContain('"code": "invalid_argument"');
    }
  });
});
