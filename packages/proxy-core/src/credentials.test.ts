import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import type net from "node:net";
import tls from "node:tls";
import { pemEncode, toDer } from "@meshtls/pki";
import { afterAll, describe, expect, it } from "vitest";
import { createTlsCredentials, namesIdentity, peerIdentity, subjectAltNames } from "./credentials.js";
import { createBundle, createStore, createTestMesh } from "./test-mesh.js";

const api = "api.default.serviceaccount.identity.meshtls.cluster.local";
const dir = mkdtempSync(path.join(tmpdir(), "proxy-core-san-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A self-signed certificate made by openssl with the given `[alt]` section lines. */
function opensslCertificate(name: string, altLines: string[]): Uint8Array {
  const config = path.join(dir, `${name}.cnf`);
  writeFileSync(config, ["[req]", "distinguished_name = dn", "x509_extensions = ext", "prompt = no", "[dn]", "CN = test", "[ext]", "subjectAltName = @alt", "[alt]", ...altLines, ""].join("\n"));
  const out = path.join(dir, `${name}.pem`);
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", path.join(dir, `${name}.key`), "-out", out, "-config", config, "-days", "1"], { stdio: "ignore" });
  return toDer(readFileSync(out, "utf8"), "CERTIFICATE");
}

describe("identities of a peer certificate", () => {
  it("reads DNS and URI SANs from the certificate itself", () => {
    const der = opensslCertificate("plain", [`DNS.1 = ${api}`, "URI.1 = spiffe://cluster.local/ns/default/sa/api"]);
    expect(subjectAltNames(der)).toEqual({ dns: [api], uri: ["spiffe://cluster.local/ns/default/sa/api"] });
    expect(peerIdentity(der)).toBe(api);
    expect(namesIdentity(der, api)).toBe(true);
    expect(namesIdentity(der, "spiffe://cluster.local/ns/default/sa/api")).toBe(true);
    expect(namesIdentity(der, "web.default.serviceaccount.identity.meshtls.cluster.local")).toBe(false);
  });

  it("never mistakes text inside one SAN for another SAN", () => {
    // One URI SAN whose value reads like more entries in node's subjectaltname rendering.
    const der = opensslCertificate("injected", [`URI.1 = spiffe://x, DNS:${api}, URI:y`]);
    expect(subjectAltNames(der)).toEqual({ dns: [], uri: [`spiffe://x, DNS:${api}, URI:y`] });
    expect(namesIdentity(der, api)).toBe(false);
  });

  it("names nothing for a missing or unparsable certificate", () => {
    expect(peerIdentity(undefined)).toBeUndefined();
    expect(namesIdentity(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]), api)).toBe(false);
  });
});

describe("bindServer: a server's own context follows the credentials", () => {
  it("gets the first certificate when it arrives, keeps the previous one when node refuses the next, and changes ticket keys on every change", async () => {
    const mesh = await createTestMesh();
    const store = createStore();
    const credentials = createTlsCredentials({ credentials: store, trustBundle: createBundle([mesh.anchor.certificate]) });
    const server = tls.createServer({ minVersion: "TLSv1.3" }, (socket) => socket.end());
    server.on("tlsClientError", () => undefined);
    credentials.bindServer(server);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as net.AddressInfo;
    const serial = (): Promise<string> =>
      new Promise((resolve) => {
        const socket = tls.connect({ host: "127.0.0.1", port, servername: api, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate) });
        socket.once("secureConnect", () => resolve(new X509Certificate(socket.getPeerCertificate().raw).serialNumber));
        socket.once("error", (error: Error & { code?: string }) => resolve(`error ${error.code ?? error.message}`));
        socket.on("close", () => resolve("closed"));
      });

    // No certificate yet: the server has none either, and completes no handshake.
    expect(await serial()).toMatch(/^error /);
    const first = await mesh.issue(api);
    store.set(first);
    expect(await serial()).toBe(new X509Certificate(first.leaf).serialNumber);
    const keys = server.getTicketKeys();

    store.set({ ...(await mesh.issue(api)), privateKeyPem: first.privateKeyPem });
    expect(await serial()).toBe(new X509Certificate(first.leaf).serialNumber);
    expect(server.getTicketKeys().equals(keys)).toBe(false);
    server.close();
    credentials.close();
  });
});
