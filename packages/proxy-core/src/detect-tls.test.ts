import net from "node:net";
import tls from "node:tls";
import { once } from "node:events";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { detectTls, parseClientHello } from "./detect-tls.js";

/** Captures the real ClientHello node:tls (OpenSSL) sends. */
async function captureClientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  const accepted = once(server, "connection");
  const client = tls.connect({ host: "127.0.0.1", port, ...options });
  client.on("error", () => undefined);
  const [socket] = (await accepted) as [net.Socket];
  const [chunk] = (await once(socket, "data")) as [Buffer];
  client.destroy();
  socket.destroy();
  server.close();
  return chunk;
}

describe("parseClientHello", () => {
  it("extracts SNI and ALPN from a real OpenSSL ClientHello", async () => {
    const hello = await captureClientHello({ servername: "web.default.serviceaccount.identity.meshtls.cluster.local", ALPNProtocols: ["transport.l5d.io/v1", "h2"] });
    expect(parseClientHello(hello)).toEqual({ kind: "tls", sni: "web.default.serviceaccount.identity.meshtls.cluster.local", alpn: ["transport.l5d.io/v1", "h2"] });
  });

  it("asks for more on every strict prefix and never throws", async () => {
    const hello = await captureClientHello({ servername: "a.b" });
    for (let i = 0; i < hello.length; i++) expect(parseClientHello(hello.subarray(0, i)).kind).toBe("need_more");
  });

  it("reassembles a ClientHello split over two records", async () => {
    const hello = await captureClientHello({ servername: "split.example" });
    const body = hello.subarray(5);
    const cut = 40;
    const record = (payload: Buffer): Buffer => Buffer.concat([Buffer.from([22, 3, 1, payload.length >> 8, payload.length & 255]), payload]);
    const fragmented = Buffer.concat([record(body.subarray(0, cut)), record(body.subarray(cut))]);
    expect(parseClientHello(fragmented)).toMatchObject({ kind: "tls", sni: "split.example" });
  });

  it("reads a hello cut into 1-byte records, a byte at a time, in time linear in its length (a minute of CPU per connection before)", async () => {
    const hello = await captureClientHello({ servername: "tiny.example" });
    const records = Buffer.concat([...hello.subarray(5)].map((byte) => Buffer.from([22, 3, 1, 0, 1, byte])));
    expect(parseClientHello(records)).toMatchObject({ kind: "tls", sni: "tiny.example" });
    // Every prefix up to detection's 8 KiB bound, as detection parses them for a client sending one byte per segment.
    const bounded = records.subarray(0, 8192);
    const started = performance.now();
    for (let i = 1; i <= bounded.length; i++) parseClientHello(bounded.subarray(0, i));
    // About 0.2 s here; joining the fragments at every record took 59 s.
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it("calls plaintext and garbage not TLS", () => {
    expect(parseClientHello(Buffer.from("GET / HTTP/1.1\r\n"))).toEqual({ kind: "not_tls" });
    expect(parseClientHello(Buffer.from([22, 2, 0]))).toEqual({ kind: "not_tls" });
    expect(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 2, 0, 0, 0]))).toEqual({ kind: "not_tls" });
  });

  it("survives arbitrary and mutated input", async () => {
    const hello = await captureClientHello({ servername: "fuzz.example", ALPNProtocols: ["h2"] });
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        expect(["need_more", "not_tls", "tls"]).toContain(parseClientHello(bytes).kind);
      }),
    );
    fc.assert(
      fc.property(fc.nat(hello.length - 1), fc.nat(255), (index, value) => {
        const mutated = Buffer.from(hello);
        mutated[index] = value;
        expect(["need_more", "not_tls", "tls"]).toContain(parseClientHello(mutated).kind);
      }),
    );
  });
});

describe("detectTls", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  async function pair(): Promise<{ client: net.Socket; server: net.Socket }> {
    const listener = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    const accepted = once(listener, "connection");
    const client = net.connect((listener.address() as net.AddressInfo).port, "127.0.0.1");
    const [server] = (await accepted) as [net.Socket];
    cleanups.push(() => {
      client.destroy();
      server.destroy();
      listener.close();
    });
    return { client, server };
  }

  it("replays the bytes it read: plaintext reaches the next reader whole", async () => {
    const { client, server } = await pair();
    client.write("hello plaintext world");
    const detection = await detectTls({ socket: server });
    expect(detection.kind).toBe("plaintext");
    const [data] = (await once(server.resume(), "data")) as [Buffer];
    expect(data.toString()).toBe("hello plaintext world");
  });

  it("waits for a ClientHello that arrives byte by byte", async () => {
    const hello = await captureClientHello({ servername: "slow.example" });
    const { client, server } = await pair();
    const detected = detectTls({ socket: server, timeoutMs: 5000 });
    for (let i = 0; i < hello.length; i += 64) {
      client.write(hello.subarray(i, i + 64));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await expect(detected).resolves.toMatchObject({ kind: "tls", sni: "slow.example", bytesRead: hello.length });
  });

  it("fails on timeout instead of falling back", async () => {
    const { client, server } = await pair();
    client.write(Buffer.from([22, 3, 1]));
    await expect(detectTls({ socket: server, timeoutMs: 100 })).rejects.toMatchObject({ code: "ERR_DETECT_TIMEOUT" });
  });

  it("fails when a would-be ClientHello exceeds the byte bound", async () => {
    const { client, server } = await pair();
    client.write(Buffer.concat([Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc]), Buffer.alloc(9000)]));
    await expect(detectTls({ socket: server, maxBytes: 8192 })).rejects.toMatchObject({ code: "ERR_DETECT_TOO_LARGE" });
  });

  it("fails when the client closes before deciding", async () => {
    const { client, server } = await pair();
    client.end();
    await expect(detectTls({ socket: server })).rejects.toMatchObject({ code: "ERR_DETECT_CLOSED" });
  });
});
