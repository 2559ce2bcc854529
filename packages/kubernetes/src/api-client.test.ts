import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { createKubeApiFromConfig } from "./api-client.ts";
import { startFakeApiServer, type FakeApiServer } from "./testing/fake-api-server.ts";
import { kubeconfigYaml } from "./testing/kubeconfig.ts";

const run = promisify(execFile);

/** A CA, a server certificate for 127.0.0.1 and a client certificate (CN=system:serviceaccount:meshtls:destination), made by openssl. */
async function makePki(dir: string): Promise<void> {
  const at = (name: string): string => path.join(dir, name);
  const openssl = (...args: string[]) => run("openssl", args, { cwd: dir });
  await openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", at("ca.key"), "-out", at("ca.crt"), "-days", "1", "-subj", "/CN=fake-kubernetes-ca");
  await writeFile(at("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await writeFile(at("client.ext"), "extendedKeyUsage=clientAuth\n");
  for (const [name, subject] of [
    ["server", "/CN=kube-apiserver"],
    ["client", "/CN=system:serviceaccount:meshtls:destination"],
  ] as const) {
    await openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", at(`${name}.key`), "-out", at(`${name}.csr`), "-subj", subject);
    await openssl("x509", "-req", "-in", at(`${name}.csr`), "-CA", at("ca.crt"), "-CAkey", at("ca.key"), "-CAcreateserial", "-out", at(`${name}.crt`), "-days", "1", "-extfile", at(`${name}.ext`));
  }
}

describe("createKubeApiFromConfig with @kubernetes/client-node 2.x (KubeConfig, applyToHTTPSOptions)", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(tmpdir(), "meshtls-kubeconfig-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  it("https with the kubeconfig's CA and client certificate: the server is verified, the client certificate presented, one connection reused", async () => {
    const dir = await tempDir();
    await makePki(dir);
    const seen: { subject: string | undefined; authorized: boolean; port: number }[] = [];
    const server: Server = createServer(
      { key: await readFile(path.join(dir, "server.key")), cert: await readFile(path.join(dir, "server.crt")), ca: await readFile(path.join(dir, "ca.crt")), requestCert: true, rejectUnauthorized: true },
      (request, response) => {
        const socket = request.socket as TLSSocket;
        const cn = socket.getPeerCertificate().subject?.CN;
        seen.push({ subject: Array.isArray(cn) ? cn.join(",") : cn, authorized: socket.authorized, port: socket.remotePort ?? 0 });
        response.setHeader("content-type", "application/json");
        response.end(JSON.stringify({ kind: "NamespaceList", apiVersion: "v1", metadata: { resourceVersion: "7" }, items: [] }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    server.keepAliveTimeout = 10_000;
    const port = (server.address() as AddressInfo).port;
    const file = path.join(dir, "kubeconfig");
    await writeFile(
      file,
      kubeconfigYaml({
        cluster: `{server: "https://127.0.0.1:${port}", certificate-authority: "${path.join(dir, "ca.crt")}"}`,
        user: `{client-certificate: "${path.join(dir, "client.crt")}", client-key: "${path.join(dir, "client.key")}"}`,
      }),
    );
    const api = createKubeApiFromConfig({ kubeconfig: file });
    expect(api.server).toBe(`https://127.0.0.1:${port}`);
    for (let i = 0; i < 3; i++) {
      expect(await api.request<{ kind: string }>({ method: "GET", path: "/api/v1/namespaces" })).toMatchObject({ kind: "NamespaceList" });
    }
    expect(seen.map((s) => [s.subject, s.authorized])).toEqual(Array.from({ length: 3 }, () => ["system:serviceaccount:meshtls:destination", true]));
    expect(new Set(seen.map((s) => s.port)).size).toBe(1);

    // A kubeconfig whose CA does not sign the server's certificate: the call fails, nothing is sent.
    await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(dir, "other.key"), "-out", path.join(dir, "other.crt"), "-days", "1", "-subj", "/CN=other-ca"]);
    await writeFile(file, (await readFile(file, "utf8")).replace(path.join(dir, "ca.crt"), path.join(dir, "other.crt")));
    const untrusted = createKubeApiFromConfig({ kubeconfig: file });
    await expect(untrusted.request({ method: "GET", path: "/api/v1/namespaces" })).rejects.toMatchObject({ code: "ERR_KUBE_API_UNREACHABLE" });
    expect(seen).toHaveLength(3);
  });

  it("a token file, as client-node's in-cluster configuration reads the ServiceAccount token, is sent as the bearer token", async () => {
    const dir = await tempDir();
    const api: FakeApiServer = await startFakeApiServer({ bearerToken: "projected-token-1" });
    cleanups.push(() => api.close());
    const tokenFile = path.join(dir, "token");
    await writeFile(tokenFile, "projected-token-1");
    const file = path.join(dir, "kubeconfig");
    await writeFile(file, kubeconfigYaml({ cluster: `{server: "${api.url}", insecure-skip-tls-verify: true}`, user: `{auth-provider: {name: tokenFile, config: {tokenFile: "${tokenFile}"}}}` }));
    const client = createKubeApiFromConfig({ kubeconfig: file });
    await expect(client.request({ method: "GET", path: "/api/v1/namespaces" })).resolves.toMatchObject({ kind: "NamespaceList" });
    expect(api.requests().at(-1)!.headers["authorization"]).toBe("Bearer projected-token-1");
    // A wrong token is the API server's 401, with its Status message.
    await writeFile(tokenFile, "stale");
    const stale = createKubeApiFromConfig({ kubeconfig: file });
    await expect(stale.request({ method: "GET", path: "/api/v1/namespaces" })).rejects.toMatchObject({ code: "ERR_KUBE_API_STATUS", httpStatus: 401 });
  });

  it("refuses a missing context and an http server without insecure-skip-tls-verify with ERR_KUBE_CONFIG", async () => {
    const dir = await tempDir();
    const file = path.join(dir, "kubeconfig");
    const config = (skip: boolean) => kubeconfigYaml({ cluster: `{server: "http://127.0.0.1:1"${skip ? ", insecure-skip-tls-verify: true" : ""}}`, user: "{token: t}" });
    await writeFile(file, config(true));
    expect(() => createKubeApiFromConfig({ kubeconfig: file, context: "nope" })).toThrow(expect.objectContaining({ code: "ERR_KUBE_CONFIG" }));
    await writeFile(file, config(false));
    await expect(createKubeApiFromConfig({ kubeconfig: file }).request({ method: "GET", path: "/api/v1/namespaces" })).rejects.toMatchObject({ code: "ERR_KUBE_CONFIG" });
  });
});
