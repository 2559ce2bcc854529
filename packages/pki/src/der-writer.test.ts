import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encode, x509Time } from "./der-writer.ts";

/** The encoding as RFC 5280 4.1.2.5 states it, from the ISO text (the straightforward, slower way). */
function reference(d: Date): string {
  const iso = d.toISOString();
  const y = d.getUTCFullYear();
  const rest = `${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  return y >= 1950 && y < 2050 ? `17 ${iso.slice(2, 4)}${rest}` : `18 ${iso.slice(0, 4)}${rest}`;
}

function shown(d: Date): string {
  const der = encode(x509Time(d));
  expect(der[1]).toBe(der.length - 2);
  return `${(der[0] ?? 0).toString(16)} ${Buffer.from(der.subarray(2)).toString("latin1")}`;
}

describe("x509Time", () => {
  it("writes UTCTime through 2049 and GeneralizedTime from 2050, at the boundaries", () => {
    expect(shown(new Date("1950-01-01T00:00:00Z"))).toBe("17 500101000000Z");
    expect(shown(new Date("2049-12-31T23:59:59.999Z"))).toBe("17 491231235959Z");
    expect(shown(new Date("2050-01-01T00:00:00Z"))).toBe("18 20500101000000Z");
    expect(shown(new Date("1949-12-31T23:59:59Z"))).toBe("18 19491231235959Z");
    expect(shown(new Date("0001-02-03T04:05:06Z"))).toBe("18 00010203040506Z");
  });

  it("agrees with the ISO-text encoding for any instant in years 0–9999", () => {
    fc.assert(
      fc.property(fc.date({ min: new Date("0000-01-01T00:00:00Z"), max: new Date("9999-12-31T23:59:59.999Z"), noInvalidDate: true }), (d) => {
        expect(shown(d)).toBe(reference(d));
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses years it cannot encode", () => {
    expect(() => x509Time(new Date("+010000-01-01T00:00:00Z"))).toThrow(RangeError);
    expect(() => x509Time(new Date(Number.NaN))).toThrow(RangeError);
  });
});
