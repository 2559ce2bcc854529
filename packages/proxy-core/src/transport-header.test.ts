import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { encodeHeader, readTransportHeader } from "./transport-header.js";

const header = encodeHeader({ port: 8080, sessionProtocol: "http1" });
const request = Buffer.from("GET / HTTP/1.1\r\n\r\n");

/** A paused stream holding `bytes` already, as a TLS socket holds what it decrypted before anyone read. */
function buffered(...bytes: Buffer[]): PassThrough {
  const stream = new PassThrough();
  for (const b of bytes) stream.write(b);
  return stream;
}

describe("readTransportHeader", () => {
  it("takes a header that is buffered already and puts the bytes after it back", async () => {
    const stream = buffered(Buffer.concat([header, request]));
    await expect(readTransportHeader({ stream, timeoutMs: 1000 })).resolves.toMatchObject({ port: 8080, sessionProtocol: "http1", byteLength: header.length });
    expect(stream.isPaused()).toBe(true);
    expect(stream.read()).toEqual(request);
  });

  it("waits for the rest of a header begun in the buffered bytes", async () => {
    const stream = buffered(header.subarray(0, 10));
    const read = readTransportHeader({ stream, timeoutMs: 1000 });
    stream.write(Buffer.concat([header.subarray(10), request]));
    await expect(read).resolves.toMatchObject({ port: 8080 });
    expect(stream.read()).toEqual(request);
  });

  it("waits for a header that arrives later, in pieces", async () => {
    const stream = new PassThrough();
    const read = readTransportHeader({ stream, timeoutMs: 1000 });
    stream.write(header.subarray(0, 5));
    setTimeout(() => stream.write(header.subarray(5)), 10);
    await expect(read).resolves.toMatchObject({ port: 8080, byteLength: header.length });
    expect(stream.read()).toBeNull();
  });

  it("refuses buffered bytes that are not a header, without waiting", async () => {
    const stream = buffered(request);
    await expect(readTransportHeader({ stream, timeoutMs: 60_000 })).rejects.toMatchObject({ code: "ERR_TRANSPORT_HEADER_INVALID" });
  });

  it("refuses a buffered header larger than maxBytes", async () => {
    const big = encodeHeader({ port: 8080, name: "x".repeat(200) });
    await expect(readTransportHeader({ stream: buffered(big), timeoutMs: 60_000, maxBytes: 100 })).rejects.toMatchObject({ code: "ERR_TRANSPORT_HEADER_INVALID" });
  });

  it("times out on a header that never completes, buffered start or not", async () => {
    await expect(readTransportHeader({ stream: buffered(header.subarray(0, 10)), timeoutMs: 50 })).rejects.toMatchObject({ code: "ERR_TRANSPORT_HEADER_TIMEOUT" });
    await expect(readTransportHeader({ stream: new PassThrough(), timeoutMs: 50 })).rejects.toMatchObject({ code: "ERR_TRANSPORT_HEADER_TIMEOUT" });
  });

  it("refuses a stream that ends before a whole header", async () => {
    const stream = buffered(header.subarray(0, 10));
    const read = readTransportHeader({ stream, timeoutMs: 1000 });
    stream.end();
    await expect(read).rejects.toMatchObject({ code: "ERR_TRANSPORT_HEADER_INVALID" });
  });
});
