import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { pemEncode } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEndpoint } from "./connect-endpoint.js";
import { createTlsCredentials, groupLabel, groupsForOpenssl, sessionKexGroup, type TlsCredentials } from "./credentials.js";
import { createTerminateTls } from "./inbound/terminate-tls.js";
import type { InboundTarget } from "./inbound/target.js";
import { createBundle, createStore, createTestMesh, identityOf, type TestMesh } from "./test-mesh.js";

// Node 24 (OpenSSL 3.5) knows X25519MLKEM768; the system's openssl (3.0) does
// not, and stands for every older peer: it must get X25519 with no
// HelloRetryRequest in either direction.

/** SHA-256("HelloRetryRequest"): the random of a ServerHello that is an HRR (RFC 8446 4.1.3). */
const HRR_RANDOM = Buffer.from("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c", "hex");

interface Wire {
  /** The groups of the first ClientHello's key shares. */
  keyShares: number[];
  /** Whether the server's first handshake message was a HelloRetryRequest. */
  helloRetry: boolean;
}

/** The key_share groups (extension 51) of the ClientHello at the start of `record`. */
function keyShareGroups(record: Buffer): number[] {
  let at = 5 + 4 + 2 + 32; // record header, handshake header, legacy_version, random
  at += 1 + (record[at] ?? 0); // session id
  at += 2 + record.readUInt16BE(at); // cipher suites
  at += 1 + (record[at] ?? 0); // compression methods
  const end = at + 2 + record.readUInt16BE(at);
  for (at += 2; at < end; ) {
    const type = record.readUInt16BE(at);
    const length = record.readUInt16BE(at + 2);
    if (type === 51) {
      const groups: number[] = [];
      for (let share = at + 6; share < at + 4 + length; share += 4 + record.readUInt16BE(share + 2)) groups.push(record.readUInt16BE(share));
      return groups;
    }
    at += 4 + length;
  }
  return [];
}

/** A loopback relay to `port` that reads the first flight each way: the ClientHello's key shares, and whether the server answered with an HRR. */
async function relay(port: number): Promise<{ port: number; wire: Wire[]; close(): void }> {
  const wire: Wire[] = [];
  const server = net.createServer((client) => {
    const seen: Wire = { keyShares: [], helloRetry: false };
    wire.push(seen);
    const upstream = net.connect(port, "127.0.0.1");
    client.once("data", (hello: Buffer) => (seen.keyShares = keyShareGroups(hello)));
    upstream.once("data", (hello: Buffer) => (seen.helloRetry = hello.subarray(11, 43).equals(HRR_RANDOM)));
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { port: (server.address() as net.AddressInfo).port, wire, close: () => server.close() };
}

const X25519MLKEM768 = 0x11ec;
const X25519 = 0x1d;

describe("mesh TLS key exchange groups", () => {
  let mesh: TestMesh;
  let dir: string;
  const closers: (() => void)[] = [];
  const API = identityOf("api");
  const WEB = identityOf("web");

  /** A meshtls inbound TLS terminator on a loopback port; the groups each handshake reported. */
  async function inbound(): Promise<{ port: number; groups: string[]; credentials: TlsCredentials }> {
    const groups: string[] = [];
    const credentials = createTlsCredentials({
      credentials: createStore(await mesh.issue(API)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      onHandshake: (direction, group) => groups.push(`${direction} ${group}`),
    });
    const terminate = createTerminateTls({ identity: API, credentials, handshakeTimeoutMs: 10_000 });
    const server = net.createServer((raw) => {
      void terminate({} as InboundTarget, raw).then((result) => {
        if ("socket" in result) result.socket.end("ok");
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    closers.push(() => server.close(), () => credentials.close());
    return { port: (server.address() as net.AddressInfo).port, groups, credentials };
  }

  async function outbound(): Promise<{ credentials: TlsCredentials; groups: string[] }> {
    const groups: string[] = [];
    const credentials = createTlsCredentials({
      credentials: createStore(await mesh.issue(WEB)),
      trustBundle: createBundle([mesh.anchor.certificate]),
      onHandshake: (direction, group) => groups.push(`${direction} ${group}`),
    });
    closers.push(() => credentials.close());
    return { credentials, groups };
  }

  /** Runs openssl 3.0 (`s_client` or `s_server`) with our test mesh's leaf for `identity`; resolves its output once it exits. */
  async function openssl(args: string[], identity: string, input?: string): Promise<{ readonly out: string; kill(): void; ready: Promise<void>; exited: Promise<void> }> {
    const leaf = await mesh.issue(identity);
    const key = join(dir, `${identity}.key`);
    const cert = join(dir, `${identity}.crt`);
    const ca = join(dir, "ca.crt");
    writeFileSync(key, leaf.privateKeyPem);
    // s_server and s_client send -cert alone: the issuer goes in -cert_chain.
    const [leafPem = "", ...issuers] = leaf.certificateChainPem.split(/(?<=-----END CERTIFICATE-----\n?)/).filter((pem) => pem.trim() !== "");
    const chain = join(dir, `${identity}.chain`);
    writeFileSync(cert, leafPem);
    writeFileSync(chain, issuers.join(""));
    writeFileSync(ca, pemEncode("CERTIFICATE", mesh.anchor.certificate));
    const child = spawn("openssl", [...args, "-key", key, "-cert", cert, "-cert_chain", chain, "-CAfile", ca], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    if (input !== undefined) child.stdin.end(input);
    const exited = once(child, "exit").then(() => undefined);
    const result = {
      get out() {
        return out;
      },
      kill: () => child.kill(),
      ready: new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`openssl ${args[0] ?? ""} not ready: ${out}`)), 20_000);
        const check = (): void => {
          if (/ACCEPT/.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        };
        child.stdout.on("data", check);
        void exited.then(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
      exited,
    };
    closers.push(() => child.kill());
    return result;
  }

  beforeAll(async () => {
    mesh = await createTestMesh();
    dir = mkdtempSync(join(tmpdir(), "meshtls-groups-"));
  });
  afterAll(() => {
    for (const close of closers) close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("names the OpenSSL list: key shares for the hybrid and the first classical group", () => {
    expect(groupsForOpenssl(["X25519MLKEM768", "X25519", "P-256"])).toBe("*X25519MLKEM768:*X25519:P-256");
    expect(groupsForOpenssl(["X25519", "P-256"])).toBe("*X25519:P-256");
    expect(groupsForOpenssl(["X25519MLKEM768", "SecP256r1MLKEM768", "P-256", "X25519"])).toBe("*X25519MLKEM768:SecP256r1MLKEM768:*P-256:X25519");
    expect(() => groupsForOpenssl([])).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => groupsForOpenssl(["X25519:*P-256"])).toThrow(expect.objectContaining({ code: "ERR_CONFIG_INVALID" }));
    expect(() => createTlsCredentials({ credentials: createStore(), trustBundle: createBundle([]), groups: ["NoSuchGroup"] })).toThrow(
      expect.objectContaining({ code: "ERR_CONFIG_INVALID" }),
    );
    expect([groupLabel("prime256v1"), groupLabel("X25519MLKEM768"), groupLabel("brainpoolP256r1tls13"), groupLabel(undefined)]).toEqual(["P-256", "X25519MLKEM768", "other", "unknown"]);
    expect(sessionKexGroup(Buffer.from("3008020101b303020111", "hex"))).toBe(0x11);
    expect(sessionKexGroup(Buffer.from("3008020101b3030201", "hex"))).toBeUndefined();
    expect(sessionKexGroup(Buffer.from("020101", "hex"))).toBeUndefined();
  });

  it("negotiates X25519MLKEM768 between two meshtls peers, with no HelloRetryRequest", async () => {
    const server = await inbound();
    const client = await outbound();
    const wire = await relay(server.port);
    closers.push(wire.close);
    const connection = await connectEndpoint({ endpoint: { address: "127.0.0.1", port: wire.port, weight: 1, labels: {}, identity: API }, credentials: client.credentials });
    connection.socket.resume();
    await once(connection.socket, "end");
    connection.socket.destroy();
    expect(wire.wire).toEqual([{ keyShares: [X25519MLKEM768, X25519], helloRetry: false }]);
    expect(client.groups).toEqual(["outbound X25519MLKEM768"]);
    expect(server.groups).toEqual(["inbound X25519MLKEM768"]);
  });

  it("gives an OpenSSL 3.0 client (openssl s_client) X25519 with no HelloRetryRequest", async () => {
    const server = await inbound();
    const wire = await relay(server.port);
    closers.push(wire.close);
    const client = await openssl(["s_client", "-connect", `127.0.0.1:${wire.port}`, "-servername", API, "-tls1_3", "-ign_eof"], WEB, "");
    await client.exited;
    expect(client.out).toMatch(/Server Temp Key: X25519/);
    expect(wire.wire).toEqual([{ keyShares: [X25519], helloRetry: false }]);
    await expect.poll(() => server.groups).toEqual(["inbound X25519"]);
  });

  it("reports the one group configured for every handshake, resumed ones too, without reading it back", async () => {
    const groups: string[] = [];
    const onHandshake = (direction: string, group: string): number => groups.push(`${direction} ${group}`);
    const server = createTlsCredentials({ credentials: createStore(await mesh.issue(API)), trustBundle: createBundle([mesh.anchor.certificate]), groups: ["P-256"], onHandshake });
    const client = createTlsCredentials({ credentials: createStore(await mesh.issue(WEB)), trustBundle: createBundle([mesh.anchor.certificate]), groups: ["P-256"], onHandshake });
    const terminate = createTerminateTls({ identity: API, credentials: server, handshakeTimeoutMs: 10_000 });
    const listener = net.createServer((raw) => {
      void terminate({} as InboundTarget, raw).then((result) => {
        if ("socket" in result) result.socket.end("ok");
      });
    });
    listener.listen(0, "127.0.0.1");
    await once(listener, "listening");
    closers.push(() => listener.close(), () => server.close(), () => client.close());
    const { port } = listener.address() as net.AddressInfo;
    const resumed: boolean[] = [];
    for (let i = 0; i < 2; i++) {
      const connection = await connectEndpoint({ endpoint: { address: "127.0.0.1", port, weight: 1, labels: {}, identity: API }, credentials: client });
      const socket = connection.socket as TLSSocket;
      resumed.push(socket.isSessionReused());
      expect(socket.getEphemeralKeyInfo()).toMatchObject({ name: "prime256v1" });
      socket.resume();
      await once(socket, "end");
      connection.socket.destroy();
    }
    expect(resumed).toEqual([false, true]);
    expect(groups.sort()).toEqual(["inbound P-256", "inbound P-256", "outbound P-256", "outbound P-256"]);
  });

  it("reaches an OpenSSL 3.0 server (openssl s_server) with X25519 and no HelloRetryRequest", async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const { port: free } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    const server = await openssl(["s_server", "-accept", `127.0.0.1:${port}`, "-tls1_3", "-Verify", "1", "-naccept", "1"], API);
    await server.ready;
    const client = await outbound();
    const wire = await relay(port);
    closers.push(wire.close);
    const connection = await connectEndpoint({ endpoint: { address: "127.0.0.1", port: wire.port, weight: 1, labels: {}, identity: API }, credentials: client.credentials });
    connection.socket.destroy();
    expect(wire.wire).toEqual([{ keyShares: [X25519MLKEM768, X25519], helloRetry: false }]);
    expect(client.groups).toEqual(["outbound X25519"]);
    server.kill();
  });
});
