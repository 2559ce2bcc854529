// HTTP awareness with real processes: identity, destination (registry file),
// two meshtls-proxy processes, unmodified clients (curl, grpc-js).
import { execFile } from "node:child_process";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bins, createMaterial, freePort, identityOf, sample, scrape, startNode, tempDir } from "./harness.ts";
import type { Material, Proc } from "./harness.ts";
import { writeFileSync } from "node:fs";

const curl = promisify(execFile);
const A = identityOf("a");

/*
 * The test proto, encoded by hand below (one string field is all it needs):
 *   syntax = "proto3";
 *   package meshtls.test;
 *   message Note { string text = 1; }
 *   service Echo {
 *     rpc Say(Note) returns (Note);
 *     rpc Count(Note) returns (stream Note);
 *     rpc Chat(stream Note) returns (stream Note);
 *   }
 */
interface Note {
  text: string;
}
const encodeNote = (note: Note): Buffer => {
  const text = Buffer.from(note.text, "utf8");
  if (text.length === 0) return Buffer.alloc(0);
  const length: number[] = [];
  let n = text.length;
  while (n > 0x7f) {
    length.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  length.push(n);
  return Buffer.concat([Buffer.from([0x0a, ...length]), text]);
};
const decodeNote = (bytes: Buffer): Note => {
  if (bytes.length === 0) return { text: "" };
  let offset = 1;
  let length = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[offset++] ?? 0;
    length |= (byte & 0x7f) << shift;
    shift += 7;
    if ((byte & 0x80) === 0) break;
  }
  return { text: bytes.subarray(offset, offset + length).toString("utf8") };
};
const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/meshtls.test.Echo/${name}`,
  requestStream,
  responseStream,
  requestSerialize: encodeNote,
  requestDeserialize: decodeNote,
  responseSerialize: encodeNote,
  responseDeserialize: decodeNote,
});
const EchoService = { say: method("Say", false, false), count: method("Count", false, true), chat: method("Chat", true, true) };
const EchoClient = grpc.makeGenericClientConstructor(EchoService, "meshtls.test.Echo");

describe("HTTP-aware meshtls-proxy (real processes, curl and grpc-js)", () => {
  const procs: Proc[] = [];
  let dir: string;
  let material: Material;
  let a: { inbound: string; outbound: string; admin: string; route: string };
  let b: { inbound: string; outbound: string; admin: string };
  let httpApp: http.Server;
  let grpcServer: grpc.Server;
  const seen: { clientId?: string; version: string }[] = [];

  async function startProxy(name: string, sa: string, ip: string, workloadPort: number, ids: { addr: string; name: string }, destinationAddr: string, extra: string[] = []) {
    const proxy = startNode(name, bins.proxy, [
      "--identity", identityOf(sa), "--token-file", await material.tokenFile(sa), "--trust-anchors", material.caFile,
      "--identity-addr", ids.addr, "--identity-name", ids.name, "--destination-addr", destinationAddr, "--destination-insecure-plaintext",
      "--context-token", '{"ns":"default"}', "--inbound", `${ip}:${await freePort(ip)}`, "--outbound", `${ip}:${await freePort(ip)}`,
      "--admin", `${ip}:0`, "--workload", `${ip}:${workloadPort}`, "--outbound-bind", ip, "--drain-timeout", "1s", ...extra,
    ]);
    procs.push(proxy);
    const listening = await proxy.waitForMsg("listening");
    await proxy.waitForMsg("first certificate obtained: ready");
    const routes = listening["routes"] as string[] | undefined;
    return { inbound: String(listening["inbound"]), outbound: String(listening["outbound"]), admin: String(listening["admin"]), route: routes?.[0] ?? "" };
  }

  beforeAll(async () => {
    dir = tempDir("meshtls-proxy-http-");
    material = await createMaterial(dir);
    httpApp = http.createServer((req, res) => {
      seen.push({ version: req.httpVersion, ...(req.headers["l5d-client-id"] === undefined ? {} : { clientId: String(req.headers["l5d-client-id"]) }) });
      const status = /^\/status\/(\d{3})/.exec(req.url ?? "")?.[1];
      res.writeHead(status === undefined ? 200 : Number(status), { "content-type": "text/plain" });
      res.end(`b ${req.url ?? ""}`);
    });
    await new Promise<void>((r) => httpApp.listen(0, "127.0.1.2", r));
    const httpPort = (httpApp.address() as net.AddressInfo).port;
    grpcServer = new grpc.Server();
    grpcServer.addService(EchoService, {
      say: (call: grpc.ServerUnaryCall<Note, Note>, done: grpc.sendUnaryData<Note>) => {
        if (call.request.text === "fail") done({ code: grpc.status.UNAVAILABLE, details: "asked to fail" });
        else done(null, { text: `b heard ${call.request.text} from ${String(call.metadata.get("l5d-client-id")[0] ?? "nobody")}` });
      },
      count: (call: grpc.ServerWritableStream<Note, Note>) => {
        for (let i = 1; i <= Number(call.request.text); i++) call.write({ text: String(i) });
        call.end();
      },
      chat: (call: grpc.ServerDuplexStream<Note, Note>) => {
        call.on("data", (note: Note) => call.write({ text: note.text.toUpperCase() }));
        call.on("end", () => call.end());
      },
    });
    const grpcPort = await new Promise<number>((resolve, reject) => grpcServer.bindAsync("127.0.1.2:0", grpc.ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(port))));

    const identity = startNode("identity", bins.identity, ["--trust-anchors", material.caFile, "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"), "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    procs.push(identity);
    const idListening = await identity.waitForMsg("listening");
    const ids = { addr: String(idListening["grpc"]), name: String(idListening["serverName"]) };
    const bInbound = await freePort("127.0.1.2");
    const registry = path.join(dir, "registry.yaml");
    writeFileSync(registry, [
      "services:",
      "  - name: web",
      `    ports: [{ port: 80, targetPort: ${httpPort} }]`,
      `    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bInbound} }]`,
      "  - name: echo",
      `    ports: [{ port: 50051, targetPort: ${grpcPort} }]`,
      `    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: ${bInbound} }]`,
      "",
    ].join("\n"));
    const destination = startNode("destination", bins.destination, ["--registry", registry, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--insecure-plaintext"]);
    procs.push(destination);
    const destinationAddr = String((await destination.waitForMsg("listening"))["grpcAddress"]);
    b = await startProxy("proxy-b", "b", "127.0.1.2", httpPort, ids, destinationAddr, ["--inbound", `127.0.1.2:${bInbound}`]);
    const routePort = await freePort("127.0.1.1");
    a = await startProxy("proxy-a", "a", "127.0.1.1", 1, ids, destinationAddr, ["--route", `127.0.1.1:${routePort}=echo.default.svc.cluster.local:50051`]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGTERM")));
    httpApp.close();
    grpcServer.forceShutdown();
  });

  it("curl HTTP/1.1 and HTTP/1.0: new application connections share pooled mesh connections; statuses and identities as the client saw them", async () => {
    const statuses = [200, 404, 200, 503, 500, 204, 200, 200];
    const before = await scrape(a.admin);
    for (const [i, status] of statuses.entries()) {
      const { stdout } = await curl("curl", ["-s", i % 2 === 0 ? "--http1.1" : "--http1.0", "-o", "/dev/null", "-w", "%{http_code}", "-H", "l5d-client-id: spoofed", "-x", `http://${a.outbound}`, `http://web.default.svc.cluster.local/status/${status}`]);
      expect(Number(stdout)).toBe(status);
    }
    expect(seen.slice(-statuses.length).every((s) => s.clientId === A)).toBe(true);
    const after = await scrape(a.admin);
    const bText = await scrape(b.admin);
    // Eight application connections, fewer mesh connections (sequential requests reuse one).
    const mesh = sample(after, "tcp_open_total", 'direction="outbound"', 'peer="dst"', 'tls="true"') - sample(before, "tcp_open_total", 'direction="outbound"', 'peer="dst"', 'tls="true"');
    expect(mesh).toBeLessThanOrEqual(1);
    for (const status of new Set(statuses)) {
      const count = statuses.filter((s) => s === status).length;
      const classification = status >= 500 ? "failure" : "success";
      expect(sample(after, "response_total", 'direction="outbound"', 'authority="web.default.svc.cluster.local"', `status_code="${status}"`, `classification="${classification}"`)).toBe(count);
      expect(sample(bText, "response_total", 'direction="inbound"', `client_id="${A}"`, `status_code="${status}"`, `classification="${classification}"`)).toBe(count);
    }
  });

  it("a plaintext client's l5d-client-id never reaches the workload", async () => {
    const { stdout } = await curl("curl", ["-s", "-H", `l5d-client-id: ${A}`, `http://${b.inbound}/direct`]);
    expect(stdout).toBe("b /direct");
    expect(seen.at(-1)).toEqual({ version: "1.1" });
  });

  it("grpc-js through the mesh: unary, server streaming and bidirectional streaming stay HTTP/2; gRPC statuses are classified as Linkerd does", async () => {
    const client = new EchoClient(a.route, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      say(note: Note, callback: (error: grpc.ServiceError | null, reply?: Note) => void): void;
      count(note: Note): grpc.ClientReadableStream<Note>;
      chat(): grpc.ClientDuplexStream<Note, Note>;
    };
    const say = (text: string): Promise<Note> => new Promise((resolve, reject) => client.say({ text }, (error, reply) => (error ? reject(error) : resolve(reply ?? { text: "" }))));
    expect(await say("hello")).toEqual({ text: `b heard hello from ${A}` });
    const failed = await say("fail").then(() => undefined, (error: grpc.ServiceError) => error);
    expect(failed?.code, failed?.message).toBe(grpc.status.UNAVAILABLE);
    const counted: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const stream = client.count({ text: "5" });
      stream.on("data", (note: Note) => counted.push(note.text));
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    expect(counted).toEqual(["1", "2", "3", "4", "5"]);
    const chat = client.chat();
    const replies: string[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      chat.on("data", (note: Note) => {
        replies.push(note.text);
        if (replies.length < 3) chat.write({ text: `m${replies.length}` });
        else chat.end();
      });
      chat.on("end", resolve);
      chat.on("error", reject);
    });
    chat.write({ text: "m0" });
    await ended;
    expect(replies).toEqual(["M0", "M1", "M2"]);
    client.close();
    const text = await scrape(a.admin);
    expect(sample(text, "response_total", 'direction="outbound"', 'grpc_status="0"', 'classification="success"')).toBe(3);
    expect(sample(text, "response_total", 'direction="outbound"', 'grpc_status="14"', 'classification="failure"')).toBe(1);
    const bText = await scrape(b.admin);
    expect(sample(bText, "response_total", 'direction="inbound"', 'grpc_status="14"', 'classification="failure"', `client_id="${A}"`)).toBe(1);
  });
});
