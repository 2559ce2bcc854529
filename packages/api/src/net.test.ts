import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ApiError } from "./errors.js";
import { IPAddress, TcpAddress } from "./gen/net.js";
import { ipToIpAddress, ipToTcpAddress, tcpAddressToIp, tcpAddressToString } from "./net.js";

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex");

describe("net encoding", () => {
  it("encodes IPv4 10.0.0.1 as the integer 0x0A000001 (fixed32, field 1)", () => {
    const address = ipToTcpAddress("10.0.0.1", 80);
    expect(address.ip?.ip).toEqual({ $case: "ipv4", value: 0x0a000001 });
    // TcpAddress{ip=1: IPAddress{ipv4=1 fixed32 LE on the wire}, port=2: 80}
    expect(hex(TcpAddress.encode(address).finish())).toBe("0a050d0100000a" + "1050");
  });

  it("encodes IPv6 as big-endian 64-bit halves (fixed64)", () => {
    const address = ipToIpAddress("2001:db8::ff00:42:8329");
    expect(address.ip).toEqual({ $case: "ipv6", value: { first: 0x20010db800000000n, last: 0x0000ff0000428329n } });
    // IPAddress{ipv6=2: IPv6{first=1 fixed64, last=2 fixed64}}: fixed64 is little-endian on the wire.
    expect(hex(IPAddress.encode(address).finish())).toBe(
      "1212" + "09" + "00000000b80d0120" + "11" + "2983420000ff0000",
    );
    const top = ipToIpAddress("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").ip;
    expect(top).toEqual({ $case: "ipv6", value: { first: 2n ** 64n - 1n, last: 2n ** 64n - 1n } });
  });

  it("accepts IPv4-embedded IPv6 and brackets, prints RFC 5952", () => {
    const mapped = ipToTcpAddress("::ffff:10.0.0.1", 1);
    expect(mapped.ip?.ip).toEqual({ $case: "ipv6", value: { first: 0n, last: 0xffff0a000001n } });
    expect(tcpAddressToString(ipToTcpAddress("[FD00:0:0:0:0:0:0:1]", 443))).toBe("[fd00::1]:443");
    expect(tcpAddressToIp(ipToTcpAddress("::", 0))).toEqual({ ip: "::", port: 0 });
    expect(tcpAddressToString(ipToTcpAddress("127.0.1.2", 4143))).toBe("127.0.1.2:4143");
  });

  it("refuses what is not an IP literal or a port with coded errors", () => {
    for (const bad of ["", "10.0.0", "10.0.0.256", "01.0.0.1", "::1::", "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", "api", "[::1"]) {
      expect(() => ipToIpAddress(bad), bad).toThrow(expect.objectContaining({ code: "ERR_INVALID_IP" }));
    }
    for (const port of [-1, 65536, 1.5, Number.NaN]) {
      expect(() => ipToTcpAddress("10.0.0.1", port)).toThrow(expect.objectContaining({ code: "ERR_INVALID_PORT" }));
    }
    expect(() => tcpAddressToIp({ ip: undefined, port: 1 })).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_TCP_ADDRESS" }),
    );
  });

  it("round-trips every IPv4 and IPv6 value through the wire", () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 65535 }), (ip, port) => {
        const decoded = tcpAddressToIp(TcpAddress.decode(TcpAddress.encode(ipToTcpAddress(ip, port)).finish()));
        expect(decoded).toEqual({ ip, port });
      }),
    );
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 128n - 1n }), (value) => {
        const first = value >> 64n;
        const last = value & (2n ** 64n - 1n);
        const text = tcpAddressToIp({ ip: { ip: { $case: "ipv6", value: { first, last } } }, port: 1 }).ip;
        const back = IPAddress.decode(IPAddress.encode(ipToIpAddress(text)).finish());
        expect(back.ip).toEqual({ $case: "ipv6", value: { first, last } });
      }),
    );
  });

  it("agrees with node:net on what is an IP literal (zones aside), never throwing uncoded errors", () => {
    const ipish = fc.oneof(
      fc.ipV4(),
      fc.ipV6(),
      fc.ipV4Extended(),
      fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.%x"), maxLength: 48 }),
    );
    fc.assert(
      fc.property(ipish, (text) => {
        let ok: boolean;
        try {
          ipToIpAddress(text);
          ok = true;
        } catch (error) {
          expect(error).toBeInstanceOf(ApiError);
          ok = false;
        }
        const nodeSays = isIP(text) !== 0 && !text.includes("%");
        expect(ok, text).toBe(nodeSays);
      }),
      { numRuns: 2000 },
    );
  });
});
