import { writeFileSync } from "node:fs";
import http from "node:http";
import type net from "node:net";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, issueFromDir, run, startNode, tempDir } from "./harness.ts";
import type { Material, Proc } from "./harness.ts";

// The proxy binary talking mTLS to the destination binary: the service
// requires a client certificate from the mesh's anchors, and the proxy must
// verify the service by its identity.
describe("meshtls-proxy ↔ meshtls-destination over mTLS (real processes on loopback)", () => {
  const procs: Proc[] = [];
  let app: http.Server;
  let material: Material;
  let identityAddr: string;
  let identityName: string;
  let destinationAddr: string;
  const DESTINATION = identityOf("destination", "meshtls");

  async function startProxy(name: string, destinationName: string): Promise<{ proxy: Proc; outbound: string }> {
    const proxy = startNode(name, bins.proxy, [
      "--identity", identityOf("a"),
      "--token-file", await material.tokenFile("a"),
      "--trust-anchors", material.caFile,
      "--identity-addr", identityAddr,
      "--identity-name", identityName,
      "--destination-addr", destinationAddr,
      "--destination-name", destinationName,
      "--context-token", '{"ns":"default"}',
      "--inbound", `127.0.0.1:${await freePort("127.0.0.1")}`,
      "--outbound", `127.0.0.1:${await freePort("127.0.0.1")}`,
      "--admin", "127.0.0.1:0",
      "--workload", "127.0.0.1:1",
      "--drain-timeout", "1s",
    ]);
    procs.push(proxy);
    const listening = await proxy.waitForMsg("listening");
    await proxy.waitForMsg("first certificate obtained: ready");
    return { proxy, outbound: String(listening["outbound"]) };
  }

  const curl = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run("curl", ["-sS", "--max-time", "15", ...args], { timeout: 20_000 });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  };

  beforeAll(async () => {
    const dir = tempDir("meshtls-proxy-dst-tls-");
    material = await createMaterial(dir);
    const identity = startNode("identity", bins.identity, [
      "--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"),
      "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
    ]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");
    identityAddr = String(idListening["grpc"]);
    identityName = String(idListening["serverName"]);

    app = http.createServer((_req, res) => res.end("unmeshed app\n"));
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    const appPort = (app.address() as net.AddressInfo).port;
    const registry = path.join(dir, "registry.yaml");
    writeFileSync(registry, ["services:", "  - name: plain", `    ports: [{ port: 80, targetPort: ${appPort} }]`, "    endpoints: [{ address: 127.0.0.1, meshed: false }]", ""].join("\n"));
    const serving = await issueFromDir(dir, DESTINATION, path.join(dir, "destination"));
    const destination = startNode("destination", bins.destination, [
      "--registry", registry, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
      "--tls-cert", serving.certFile, "--tls-key", serving.keyFile, "--tls-client-ca", material.caFile,
    ]);
    procs.push(destination);
    destinationAddr = String((await destination.waitForMsg("listening"))["grpcAddress"]);
  }, 60_000);

  afterAll(async () => {
    app.close();
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  });

  it("resolves through a destination service that requires the proxy's mesh client certificate", async () => {
    const { outbound } = await startProxy("proxy-a", DESTINATION);
    const res = await curl(["-x", `http://${outbound}`, "http://plain.default.svc.cluster.local/"]);
    expect(res.stderr).toBe("");
    expect(res.stdout).toBe("unmeshed app\n");
  }, 60_000);

  it("refuses a destination service that does not present the expected identity", async () => {
    const { outbound } = await startProxy("proxy-wrong-name", identityOf("someone-else", "meshtls"));
    const res = await curl(["-x", `http://${outbound}`, "-w", "%{http_code}", "-o", "/dev/null", "http://plain.default.svc.cluster.local/"]);
    expect(res.stdout).toBe("504");
  }, 60_000);
});
