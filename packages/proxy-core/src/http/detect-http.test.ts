import net from "node:net";
import { describe, expect, it } from "vitest";
import { classifyHttp, detectHttp, H2_PREFACE } from "./detect-http.js";

const classify = (text: string, max = 8192) => classifyHttp(Buffer.from(text, "latin1"), max);

describe("classifyHttp", () => {
  it("names HTTP/1.x request lines and the HTTP/2 preface", () => {
    expect(classify("GET / HTTP/1.1\r\n")).toEqual({ kind: "http1" });
    expect(classify("POST http://x/y HTTP/1.0\n")).toEqual({ kind: "http1" });
    expect(classify(H2_PREFACE)).toEqual({ kind: "h2" });
  });
  it("waits while the bytes could still become either", () => {
    expect(classify("PRI * HTTP/2")).toBeUndefined();
    expect(classify("GE")).toBeUndefined();
    expect(classify("GET /long/path")).toBeUndefined();
  });
  it("says opaque at once for anything else, short client-first messages included", () => {
    expect(classify("\x16\x03\x01")).toEqual({ kind: "opaque", reason: "not_http" });
    expect(classify("try-0")).toEqual({ kind: "opaque", reason: "not_http" });
    expect(classify("HELLO")).toEqual({ kind: "opaque", reason: "not_http" });
    expect(classify("GET / HTTP/2.0\r\n")).toEqual({ kind: "opaque", reason: "not_http" });
    expect(classify("get / HTTP/1.1\r\n")).toEqual({ kind: "opaque", reason: "not_http" });
  });
  it("is bounded in size", () => {
    expect(classify(`GET /${"a".repeat(100)}`, 64)).toEqual({ kind: "opaque", reason: "too_large" });
  });
});

describe("detectHttp on a socket", () => {
  const pair = async (): Promise<{ client: net.Socket; server: net.Socket; close: () => void }> => {
    const listener = net.createServer();
    await new Promise<void>((r) => listener.listen(0, "127.0.0.1", r));
    const accepted = new Promise<net.Socket>((r) => listener.once("connection", r));
    const client = net.connect((listener.address() as net.AddressInfo).port, "127.0.0.1");
    const server = await accepted;
    return { client, server, close: () => { client.destroy(); server.destroy(); listener.close(); } };
  };

  it("replays what it read", async () => {
    const { client, server, close } = await pair();
    client.write("GET /x HTTP/1.1\r\nhost: a\r\n\r\n");
    expect(await detectHttp({ socket: server })).toEqual({ kind: "http1" });
    const [replayed] = await new Promise<Buffer[]>((r) => server.once("data", (d: Buffer) => r([d])).resume());
    expect(String(replayed)).toBe("GET /x HTTP/1.1\r\nhost: a\r\n\r\n");
    close();
  });

  it("a silent client is opaque after the timeout, or at once when the server spoke first", async () => {
    const { server, close } = await pair();
    const started = performance.now();
    expect(await detectHttp({ socket: server, timeoutMs: 200 })).toEqual({ kind: "opaque", reason: "timeout" });
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
    expect(await detectHttp({ socket: server, timeoutMs: 10_000, serverFirst: Promise.resolve() })).toEqual({ kind: "opaque", reason: "server_first" });
    close();
  });
});
