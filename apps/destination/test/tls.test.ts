import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import { createDestinationClient } from "@meshtls/destination";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addrsOf, bufCurlGet, startDestination, waitFor, type DestinationProcess } from "./support.js";

const SERVER_NAME = "destination.meshtls.serviceaccount.identity.meshtls.cluster.local";

/** A CA, a server leaf for SERVER_NAME and a client leaf, made by openssl. */
function makePki(dir: string): void {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key");
  openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test root", "-days", "1", "-out", "ca.pem",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  for (const [name, san, eku] of [["server", `DNS:${SERVER_NAME}`, "serverAuth"], ["client", "DNS:web.default.serviceaccount.identity.meshtls.cluster.local", "clientAuth"]] as const) {
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.ec.key`);
    openssl("pkcs8", "-topk8", "-nocrypt", "-in", `${name}.ec.key`, "-out", `${name}.key`);
    openssl("req", "-new", "-key", `${name}.key`, "-subj", "/", "-out", `${name}.csr`);
    writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${eku}\nkeyUsage=critical,digitalSignature\n`);
    openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
  }
}

describe("meshtls-destination over TLS", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "meshtls-destination-tls-"));
  const file = path.join(dir, "registry.yaml");
  let server: DestinationProcess;
  const p = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    makePki(dir);
    writeFileSync(file, "services:\n  - name: api\n    endpoints: [{ address: 127.0.1.1, serviceAccount: api }]\n");
    server = await startDestination({
      registryFile: file,
      args: ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--tls-client-ca", p("ca.pem")],
    });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves buf curl with a client certificate, and refuses one without", async () => {
    const tls = { caFile: p("ca.pem"), serverName: SERVER_NAME };
    const good = bufCurlGet({ port: server.grpcPort, path: "api.default.svc.cluster.local:80", tls: { ...tls, certFile: p("client.pem"), keyFile: p("client.key") } });
    await waitFor(() => good.messages[0], 15_000, "the first update over TLS");
    expect(addrsOf(good.messages[0], "add")[0]?.tlsIdentity?.serverName?.name).toBe("api.default.serviceaccount.identity.meshtls.cluster.local");
    good.close();
    const anonymous = await bufCurlGet({ port: server.grpcPort, path: "api.default.svc.cluster.local:80", tls }).exited;
    expect(anonymous.code).not.toBe(0);
    const wrongName = await bufCurlGet({ port: server.grpcPort, path: "api:80", tls: { caFile: p("ca.pem"), serverName: "other.example", certFile: p("client.pem"), keyFile: p("client.key") } }).exited;
    expect(wrongName.code).not.toBe(0);
  });

  it("serves the destination client over mTLS", async () => {
    const client = createDestinationClient({
      address: `127.0.0.1:${server.grpcPort}`,
      credentials: credentials.createSsl(readFileSync(p("ca.pem")), readFileSync(p("client.key")), readFileSync(p("client.pem"))),
      serverName: SERVER_NAME,
    });
    try {
      const set = await client.resolve("api.default.svc.cluster.local:80").ready({ timeoutMs: 10_000 });
      expect(set.endpoints.map((e) => e.address)).toEqual(["127.0.1.1"]);
    } finally {
      client.close();
    }
  });
});
