// Expired identities do not keep working through TLS session resumption: the
// real identity service (15-second leaves), destination service and two
// proxies on loopback; web calls api (policy all-authenticated) through its
// outbound proxy. The identity service is stopped: from the earlier of the
// two leaves' notAfter on, every call is refused with its reason in /metrics,
// and a plain client's resumed session is refused by api's inbound proxy once
// the client's leaf, then api's own, has expired.
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, sample, scrape, startNode, tempDir } from "./harness.ts";
import type { Material, Proc } from "./harness.ts";
import { getThroughProxy, issueShortLeaf, plainMeshGet } from "./resumption-harness.ts";

const WEB = identityOf("web");
const API = identityOf("api");
const API_URL = "http://api.default.svc.cluster.local/";

interface Workload {
  proxy: Proc;
  inbound: string;
  outbound: string;
  admin: string;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

describe("session resumption ends with the certificates (real processes on loopback)", () => {
  const procs: Proc[] = [];
  let dir: string;
  let material: Material;
  let identity: Proc;
  let app: http.Server;
  let web: Workload;
  let api: Workload;

  beforeAll(async () => {
    dir = tempDir("meshtls-resumption-");
    material = await createMaterial(dir);
    identity = startNode("identity", bins.identity, [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
      "--issuance-lifetime", "15s", "--clock-skew", "0s",
    ]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");

    app = http.createServer((_req, res) => res.end("api ok\n"));
    await new Promise<void>((resolve) => app.listen(0, "127.0.2.2", resolve));
    const appPort = (app.address() as net.AddressInfo).port;

    const registryFile = path.join(dir, "registry.yaml");
    const apiInbound = await freePort("127.0.2.2");
    writeFileSync(registryFile, ["services:", "  - name: api", `    ports: [{ port: 80, targetPort: ${appPort} }]`, `    endpoints: [{ address: 127.0.2.2, serviceAccount: api, inboundPort: ${apiInbound} }]`, ""].join("\n"));
    const destination = startNode("destination", bins.destination, ["--registry", registryFile, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
    procs.push(destination);
    const destinationAddr = String((await destination.waitForMsg("listening"))["grpcAddress"]);

    const startProxy = async (name: string, sa: string, ip: string, inbound: number, extra: string[]): Promise<Workload> => {
      const proxy = startNode(name, bins.proxy, [
        "--identity", identityOf(sa),
        "--token-file", await material.tokenFile(sa),
        "--trust-anchors", material.caFile,
        "--identity-addr", String(idListening["grpc"]),
        "--identity-name", String(idListening["serverName"]),
        "--destination-addr", destinationAddr,
        "--destination-insecure-plaintext",
        "--context-token", '{"ns":"default"}',
        "--inbound", `${ip}:${inbound}`,
        "--outbound", `${ip}:0`,
        "--admin", `${ip}:0`,
        "--outbound-bind", ip,
        "--drain-timeout", "1s",
        ...extra,
      ]);
      procs.push(proxy);
      const listening = await proxy.waitForMsg("listening");
      await proxy.waitForMsg("first certificate obtained: ready");
      return { proxy, inbound: String(listening["inbound"]), outbound: String(listening["outbound"]), admin: String(listening["admin"]) };
    };
    [web, api] = await Promise.all([
      startProxy("proxy-web", "web", "127.0.2.1", await freePort("127.0.2.1"), ["--workload", "127.0.2.1:1"]),
      startProxy("proxy-api", "api", "127.0.2.2", apiInbound, ["--workload", `127.0.2.2:${appPort}`, "--default-policy", "all-authenticated"]),
    ]);
  }, 60_000);

  afterAll(async () => {
    app.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  it("refuses every call from the earlier leaf expiry on, with the reason counted; a resumed session too", async () => {
    // The mesh works (retried until discovery has loaded the registry).
    let first = await getThroughProxy(web.outbound, API_URL);
    for (let i = 0; i < 20 && first.status !== 200; i++) {
      await sleep(300);
      first = await getThroughProxy(web.outbound, API_URL);
    }
    expect(first).toMatchObject({ status: 200, body: "api ok\n" });

    // Stop the identity service right after api renewed: api's leaf has ~15 s left, web's 4.5 to 15 s.
    const renewals = api.proxy.lines.filter((l) => l.msg === "certified").length;
    await api.proxy.waitFor((l) => l.msg === "certified" && api.proxy.lines.filter((m) => m.msg === "certified").length > renewals, 15_000);
    await identity.stop("SIGKILL");
    const expiry = async (w: Workload): Promise<number> => {
      const line = (await scrape(w.admin)).split("\n").find((l) => l.startsWith("identity_cert_expiration_timestamp_seconds "));
      return 1000 * Number(line?.split(" ")[1]);
    };
    const [webNotAfter, apiNotAfter] = [await expiry(web), await expiry(api)];
    const bound = Math.min(webNotAfter, apiNotAfter);
    expect(bound - Date.now()).toBeGreaterThan(3000);

    // A plain client (no bound of its own) with a 3-second web leaf: full handshake, then resumption.
    const shortLeaf = await issueShortLeaf(dir, WEB, 3000);
    const longLeaf = await issueShortLeaf(dir, identityOf("other"), 3_600_000);
    const target = { host: "127.0.2.2", port: Number(api.inbound.split(":")[1]), serverName: API };
    const shortFull = await plainMeshGet({ ...target, context: shortLeaf.context });
    expect(shortFull.answer).toContain("api ok");
    const shortResumed = await plainMeshGet({ ...target, context: shortLeaf.context, session: shortFull.session });
    expect(shortResumed).toMatchObject({ reused: true });
    expect(shortResumed.answer).toContain("api ok");
    const longFull = await plainMeshGet({ ...target, context: longLeaf.context });
    expect(longFull.answer).toContain("api ok");

    // Calls through web until both leaves have expired: every one after the earlier expiry is refused.
    const calls: { startedAt: number; status: number; proxyError?: string }[] = [];
    let clientExpiredChecked = false;
    let fromWebAtBound: number | undefined;
    const fromWeb = async (): Promise<number> => sample(await scrape(api.admin), "tcp_open_total", 'direction="inbound"', 'peer="src"', 'tls="true"', `client_id="${WEB}"`);
    while (Date.now() < Math.max(webNotAfter, apiNotAfter) + 2500) {
      const startedAt = Date.now();
      const result = await getThroughProxy(web.outbound, API_URL);
      calls.push({ startedAt, status: result.status, ...(result.proxyError === undefined ? {} : { proxyError: result.proxyError }) });
      if (!clientExpiredChecked && Date.now() > shortLeaf.notAfter.getTime() + 1000 && Date.now() < apiNotAfter - 500) {
        // The plain client's ticket still resumes at api, which refuses it now that the client's leaf has expired.
        const late = await plainMeshGet({ ...target, context: shortLeaf.context, session: shortResumed.session ?? shortFull.session });
        expect(late).toMatchObject({ reused: true, answer: "" });
        clientExpiredChecked = true;
      }
      if (fromWebAtBound === undefined && Date.now() > bound + 1000) fromWebAtBound = await fromWeb();
      await sleep(250);
    }
    expect(clientExpiredChecked).toBe(true);
    const after = calls.filter((c) => c.startedAt > bound + 1000);
    expect(after.length).toBeGreaterThan(3);
    for (const call of after) {
      expect(call.status).toBe(502);
      expect(["ERR_TLS_LOCAL_CERT_EXPIRED", "ERR_TLS_PEER_CERT_EXPIRED"]).toContain(call.proxyError);
    }
    expect(calls.filter((c) => c.startedAt < bound - 1000).every((c) => c.status === 200)).toBe(true);

    // api's own leaf has expired: a session resumed from a client with a valid leaf is refused too.
    const lateOwn = await plainMeshGet({ ...target, context: longLeaf.context, session: longFull.session });
    expect(lateOwn).toMatchObject({ reused: true, answer: "" });

    const webMetrics = await scrape(web.admin);
    const apiMetrics = await scrape(api.admin);
    const webRefusals = sample(webMetrics, "outbound_tcp_errors_total", 'error="tls_local_cert_expired"') + sample(webMetrics, "outbound_tcp_errors_total", 'error="tls_peer_cert_expired"');
    expect(webRefusals).toBe(calls.filter((c) => c.status === 502).length);
    expect(sample(apiMetrics, "inbound_tcp_errors_total", 'error="tls_peer_cert_expired"')).toBeGreaterThanOrEqual(1);
    expect(sample(apiMetrics, "inbound_tcp_errors_total", 'error="tls_local_cert_expired"')).toBeGreaterThanOrEqual(1);
    // api counted no new authenticated connection from web once the bound had passed.
    expect(fromWebAtBound).toBeDefined();
    expect(await fromWeb()).toBe(fromWebAtBound);
    console.log(
      `resumption: web leaf notAfter +${((webNotAfter - bound) / 1000).toFixed(1)} s, api +${((apiNotAfter - bound) / 1000).toFixed(1)} s after the bound; ` +
        `${calls.length} calls, last success ${((Math.max(...calls.filter((c) => c.status === 200).map((c) => c.startedAt)) - bound) / 1000).toFixed(2)} s from the bound, first refusal ${((Math.min(...calls.filter((c) => c.status !== 200).map((c) => c.startedAt)) - bound) / 1000).toFixed(2)} s`,
    );
  }, 60_000);
});
