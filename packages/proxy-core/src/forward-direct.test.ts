import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DirectRead } from "./forward.js";
import { createDirectRead, forwardStreams } from "./forward.js";
import { createTestMesh } from "./test-mesh.js";

/** An upstream that greets first ("hello\n"), then echoes; ends when its client ends. Plain TCP or TLS. */
interface Upstream {
  port: number;
  ca?: string;
  close(): void;
}

let tlsOptions: { key: string; cert: string; ca: string };
/** What each relayed dialled socket had read when it was joined. */
const readBeforeJoin: number[] = [];
const closers: (() => void)[] = [];
afterAll(() => {
  for (const close of closers) close();
});
beforeAll(async () => {
  const mesh = await createTestMesh();
  const server = await mesh.issue("web.default.serviceaccount.identity.meshtls.cluster.local");
  const { pemEncode } = await import("@meshtls/pki");
  tlsOptions = { key: server.privateKeyPem, cert: server.certificateChainPem, ca: pemEncode("CERTIFICATE", mesh.anchor.certificate) };
});

async function startUpstream(secure: boolean, greeting = "hello\n"): Promise<Upstream> {
  const serve = (socket: net.Socket): void => {
    socket.on("error", () => undefined);
    if (greeting !== "") socket.write(greeting);
    socket.pipe(socket);
  };
  const server = secure ? tls.createServer({ key: tlsOptions.key, cert: tlsOptions.cert, allowHalfOpen: true }, serve) : net.createServer({ allowHalfOpen: true }, serve);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const upstream = { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
  closers.push(upstream.close);
  return upstream;
}

/** A listener that dials `upstream` for each client with `dial` and joins them with forwardStreams after `attachDelayMs`. */
async function startRelay(upstream: Upstream, secure: boolean, options: { attachDelayMs?: number; direct?: boolean; secureFront?: boolean } = {}): Promise<number> {
  const onClient = (client: net.Socket): void => {
    client.on("error", () => undefined);
    const read: DirectRead = createDirectRead();
    const onread = options.direct === false ? {} : { onread: read.onread };
    const dialled = secure
      ? tls.connect({ host: "127.0.0.1", port: upstream.port, ca: tlsOptions.ca, servername: "web.default.serviceaccount.identity.meshtls.cluster.local", checkServerIdentity: () => undefined, ...onread })
      : net.connect({ host: "127.0.0.1", port: upstream.port, allowHalfOpen: true, ...onread });
    dialled.on("error", () => undefined);
    dialled.once(secure ? "secureConnect" : "connect", () => {
      setTimeout(() => {
        readBeforeJoin.push(dialled.bytesRead);
        forwardStreams(client, dialled, { bRead: read });
      }, options.attachDelayMs ?? 0);
    });
  };
  // A TLS front: what the dialled socket reads is written into TLS (the inbound proxy's case).
  const front = options.secureFront === true ? tls.createServer({ key: tlsOptions.key, cert: tlsOptions.cert, allowHalfOpen: true }, onClient) : net.createServer({ allowHalfOpen: true }, onClient);
  await new Promise<void>((r) => front.listen(0, "127.0.0.1", r));
  closers.push(() => front.close());
  return (front.address() as net.AddressInfo).port;
}

/** Sends `payload`, half-closes, and collects everything until the relay ends the connection; optionally reads late. */
async function roundTrip(port: number, payload: Buffer, pauseMs = 0, secure = false): Promise<Buffer> {
  const socket = secure ? tls.connect({ host: "127.0.0.1", port, ca: tlsOptions.ca, checkServerIdentity: () => undefined }) : net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("end", () => resolve(Buffer.concat(chunks)));
    socket.on("error", reject);
  });
  if (pauseMs > 0) {
    // Nothing read for a while: the relay's writes to us fill up and it must pause its reads (backpressure).
    socket.pause();
    setTimeout(() => socket.resume(), pauseMs);
  }
  socket.end(payload);
  const all = await done;
  socket.destroy();
  return all;
}

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

describe.each([
  ["TCP", false],
  ["TLS", true],
])("createDirectRead: a dialled %s socket read through onread", (_name, secure) => {
  it("delivers what a server said before the forwarder attached, first and in order, then echoes and ends", async () => {
    const port = await startRelay(await startUpstream(secure), secure, { attachDelayMs: 150 });
    const back = await roundTrip(port, Buffer.from("abc"));
    expect(back.toString()).toBe("hello\nabc");
  });

  it("keeps at most 256 KiB read before the join: a server that says 2 MiB first waits, then all of it arrives in order", async () => {
    const greeting = randomBytes(2 * 1024 * 1024).toString("hex");
    const port = await startRelay(await startUpstream(secure, greeting), secure, { attachDelayMs: 300 });
    const back = await roundTrip(port, Buffer.from("abc"));
    // 256 KiB, one more read and TLS's records at most, of the 4 MiB said: not all of it.
    expect(readBeforeJoin.at(-1)).toBeLessThan(1024 * 1024);
    expect(back.length).toBe(greeting.length + 3);
    expect(sha(back)).toBe(sha(Buffer.concat([Buffer.from(greeting), Buffer.from("abc")])));
  }, 60_000);

  it("keeps every byte of 8 concurrent 4 MiB transfers through the one shared read buffer, with a slow reader", async () => {
    const port = await startRelay(await startUpstream(secure, ""), secure);
    const payloads = Array.from({ length: 8 }, () => randomBytes(4 * 1024 * 1024));
    const backs = await Promise.all(payloads.map((p, i) => roundTrip(port, p, i % 2 === 0 ? 300 : 0)));
    for (const [i, back] of backs.entries()) {
      expect(back.length).toBe(payloads[i]?.length);
      expect(sha(back)).toBe(sha(payloads[i] as Buffer));
    }
  }, 60_000);

  it("pipes a socket that was not dialled with onread (a connect layer that ignores it)", async () => {
    const port = await startRelay(await startUpstream(secure), secure, { direct: false });
    const back = await roundTrip(port, Buffer.from("xyz"));
    expect(back.toString()).toBe("hello\nxyz");
  });
});

describe("createDirectRead into TLS: a dialled TCP socket's reads written into a TLS client (the inbound proxy's leg to its workload)", () => {
  it("keeps every byte of 8 concurrent 4 MiB transfers (written from the shared buffer only when TLS takes them at once)", async () => {
    const port = await startRelay(await startUpstream(false, ""), false, { secureFront: true });
    const payloads = Array.from({ length: 8 }, () => randomBytes(4 * 1024 * 1024));
    const backs = await Promise.all(payloads.map((p, i) => roundTrip(port, p, i % 2 === 0 ? 300 : 0, true)));
    for (const [i, back] of backs.entries()) {
      expect(back.length).toBe(payloads[i]?.length);
      expect(sha(back)).toBe(sha(payloads[i] as Buffer));
    }
  }, 60_000);
});
