import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ApiError } from "./errors.js";
import { Header } from "./gen/opaque_transport.js";
import { decodeTransportHeader, encodeTransportHeader, TRANSPORT_HEADER_PREFACE } from "./transport-header.js";

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return error.code;
  }
}

describe("opaque transport header", () => {
  it("is the 23-byte preface, a u32 big-endian length and the Header bytes", () => {
    expect(TRANSPORT_HEADER_PREFACE.length).toBe(23);
    const bytes = encodeTransportHeader({ port: 8080, name: "api.default", sessionProtocol: "http1" });
    expect(bytes.subarray(0, 23).toString("latin1")).toBe("transport.l5d.io/v1\r\n\r\n");
    const length = bytes.readUInt32BE(23);
    expect(bytes.length).toBe(27 + length);
    expect(Header.decode(bytes.subarray(27))).toEqual({
      port: 8080,
      name: "api.default",
      sessionProtocol: { kind: { $case: "http1", value: {} } },
    });
    // port=1 varint 8080 (0x90 0x3f), name=2 "api.default", session_protocol=3 {http1=1 {}}
    expect(bytes.subarray(27).toString("hex")).toBe("08903f" + "120b" + Buffer.from("api.default").toString("hex") + "1a020a00");
  });

  it("round-trips and leaves the bytes after the header alone", () => {
    const header = encodeTransportHeader({ port: 443 });
    const withPayload = Buffer.concat([header, Buffer.from("GET / HTTP/1.1\r\n")]);
    expect(decodeTransportHeader(withPayload)).toEqual({ port: 443, byteLength: header.length });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 65535 }),
        fc.option(fc.string({ minLength: 1, maxLength: 300 }), { nil: undefined }),
        fc.option(fc.constantFrom("http1" as const, "http2" as const), { nil: undefined }),
        (port, name, sessionProtocol) => {
          const fields = {
            port,
            ...(name === undefined ? {} : { name }),
            ...(sessionProtocol === undefined ? {} : { sessionProtocol }),
          };
          const encoded = encodeTransportHeader(fields);
          expect(decodeTransportHeader(encoded)).toEqual({ ...fields, byteLength: encoded.length });
        },
      ),
    );
  });

  it("refuses a bad preface, an oversized length, a truncation and a bad body with coded errors", () => {
    const good = encodeTransportHeader({ port: 80 });
    expect(codeOf(() => decodeTransportHeader(Buffer.from("GET / HTTP/1.1\r\n\r\n....")))).toBe("ERR_TRANSPORT_HEADER_PREFACE");
    expect(codeOf(() => decodeTransportHeader(Buffer.from("transport.l5d.io/v2\r\n")))).toBe("ERR_TRANSPORT_HEADER_PREFACE");
    const oversized = Buffer.from(good);
    oversized.writeUInt32BE(64 * 1024 + 1, 23);
    expect(codeOf(() => decodeTransportHeader(oversized))).toBe("ERR_TRANSPORT_HEADER_TOO_LARGE");
    const max = Buffer.from(good);
    max.writeUInt32BE(64 * 1024, 23);
    expect(codeOf(() => decodeTransportHeader(max))).toBe("ERR_TRANSPORT_HEADER_TRUNCATED");
    for (let n = 0; n < good.length; n++) {
      expect(codeOf(() => decodeTransportHeader(good.subarray(0, n))), `first ${n} bytes`).toBe(
        "ERR_TRANSPORT_HEADER_TRUNCATED",
      );
    }
    const body = (hex: string): Buffer => {
      const b = Buffer.from(hex, "hex");
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([TRANSPORT_HEADER_PREFACE, len, b]);
    };
    expect(codeOf(() => decodeTransportHeader(body("0a")))).toBe("ERR_TRANSPORT_HEADER_MALFORMED"); // truncated field
    expect(codeOf(() => decodeTransportHeader(body("")))).toBe("ERR_TRANSPORT_HEADER_MALFORMED"); // port 0
    expect(codeOf(() => decodeTransportHeader(body("08ffffffff0f")))).toBe("ERR_TRANSPORT_HEADER_MALFORMED"); // port -1
    expect(codeOf(() => encodeTransportHeader({ port: 0 }))).toBe("ERR_TRANSPORT_HEADER_MALFORMED");
    expect(codeOf(() => encodeTransportHeader({ port: 80, name: "x".repeat(70_000) }))).toBe(
      "ERR_TRANSPORT_HEADER_TOO_LARGE",
    );
  });

  it("decodes hostile input to a header or a coded error, never another exception", () => {
    const prefaced = fc
      .tuple(fc.integer({ min: 0, max: 80 }), fc.uint8Array({ maxLength: 80 }))
      .map(([len, body]) => {
        const l = Buffer.alloc(4);
        l.writeUInt32BE(len);
        return new Uint8Array(Buffer.concat([TRANSPORT_HEADER_PREFACE, l, body]));
      });
    const arbitrary = fc.oneof(fc.uint8Array({ maxLength: 64 }), prefaced);
    fc.assert(
      fc.property(arbitrary, (bytes) => {
        try {
          const decoded = decodeTransportHeader(bytes);
          expect(decoded.port).toBeGreaterThan(0);
          expect(decoded.byteLength).toBeLessThanOrEqual(bytes.length);
        } catch (error) {
          expect(error).toBeInstanceOf(ApiError);
        }
      }),
      { numRuns: 5000 },
    );
  });
});
