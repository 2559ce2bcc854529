import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { PkiError } from "./errors.ts";
import {
  identityName,
  isDnsLabel,
  isDnsSubdomain,
  parseIdentityName,
  parseSpiffeId,
  parseTrustDomain,
  spiffeId,
  spiffeIdForIdentity,
  validateSpiffePath,
  validateSpiffePathSegment,
} from "./names.ts";
import { vectorPath } from "./test-helpers.ts";

interface Vectors {
  id_valid: { in: string; td: string; path: string }[];
  id_invalid: { in: string; err: string }[];
  trust_domain_from_string: { valid: string[]; invalid: { in: string; err: string }[] };
  path_segment: { valid: string[][]; invalid: { in: string; err: string }[] };
  from_path: { valid: string[][]; invalid: { in: string; err: string }[] };
}
const vectors = JSON.parse(readFileSync(vectorPath("spiffe/spiffe-id-vectors.json"), "utf8")) as Vectors;

function codeAndMessage(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(PkiError);
    return { code: (err as PkiError).code, message: (err as PkiError).message };
  }
  throw new Error("expected a PkiError");
}

describe("SPIFFE vectors (go-spiffe spiffeid tests)", () => {
  it.each(vectors.id_valid)("accepts ID $in", (v) => {
    expect(parseSpiffeId(v.in)).toEqual({ trustDomain: v.td, path: v.path });
  });
  it.each(vectors.id_invalid)("rejects ID $in", (v) => {
    expect(codeAndMessage(() => parseSpiffeId(v.in))).toEqual({ code: "ERR_SPIFFE_ID_INVALID", message: v.err });
  });
  it.each(vectors.trust_domain_from_string.valid)("accepts trust domain %s", (v) => {
    expect(() => parseTrustDomain(v)).not.toThrow();
  });
  it.each(vectors.trust_domain_from_string.invalid)("rejects trust domain $in", (v) => {
    expect(codeAndMessage(() => parseTrustDomain(v.in))).toEqual({ code: "ERR_SPIFFE_ID_INVALID", message: v.err });
  });
  it.each(vectors.path_segment.valid)("accepts path segments %j", (...segments) => {
    for (const s of segments) expect(() => validateSpiffePathSegment(s)).not.toThrow();
  });
  it.each(vectors.path_segment.invalid)("rejects path segment $in", (v) => {
    expect(codeAndMessage(() => validateSpiffePathSegment(v.in))).toEqual({ code: "ERR_SPIFFE_ID_INVALID", message: v.err });
  });
  it.each(vectors.from_path.valid)("accepts path %j", (input) => {
    expect(() => validateSpiffePath(input)).not.toThrow();
  });
  it.each(vectors.from_path.invalid)("rejects path $in", (v) => {
    expect(codeAndMessage(() => validateSpiffePath(v.in))).toEqual({ code: "ERR_SPIFFE_ID_INVALID", message: v.err });
  });
  it("counts every vector", () => {
    const total =
      vectors.id_valid.length +
      vectors.id_invalid.length +
      vectors.trust_domain_from_string.valid.length +
      vectors.trust_domain_from_string.invalid.length +
      vectors.path_segment.valid.length +
      vectors.path_segment.invalid.length +
      vectors.from_path.valid.length +
      vectors.from_path.invalid.length;
    console.log(`SPIFFE vectors exercised: ${total}`);
    expect(total).toBeGreaterThan(50);
  });
  it("enforces the SPIFFE length limits", () => {
    expect(codeAndMessage(() => parseSpiffeId(`spiffe://${"a".repeat(256)}/x`)).message).toMatch(/255/);
    expect(codeAndMessage(() => parseSpiffeId(`spiffe://td/${"a".repeat(2100)}`)).message).toMatch(/2048/);
  });
});

describe("identity names", () => {
  it("builds and parses the DNS-like name with defaults", () => {
    const name = identityName({ serviceAccount: "web", namespace: "default" });
    expect(name).toBe("web.default.serviceaccount.identity.meshtls.cluster.local");
    expect(parseIdentityName(name, {})).toEqual({
      serviceAccount: "web",
      namespace: "default",
      controlNamespace: "meshtls",
      trustDomain: "cluster.local",
    });
    expect(spiffeIdForIdentity(name, {})).toBe("spiffe://cluster.local/ns/default/sa/web");
  });
  it("honours control namespace and trust domain", () => {
    const name = identityName({ serviceAccount: "a", namespace: "b", controlNamespace: "linkerd", trustDomain: "example.org" });
    expect(name).toBe("a.b.serviceaccount.identity.linkerd.example.org");
    expect(parseIdentityName(name, { controlNamespace: "linkerd", trustDomain: "example.org" }).namespace).toBe("b");
    expect(spiffeId({ trustDomain: "example.org", namespace: "b", serviceAccount: "a" })).toBe("spiffe://example.org/ns/b/sa/a");
  });
  it.each([
    ["web.default.serviceaccount.identity.meshtls.other.domain", /not of the form/],
    ["web.default.serviceaccount.identity.linkerd.cluster.local", /not of the form/],
    ["x.web.default.serviceaccount.identity.meshtls.cluster.local", /exactly/],
    ["default.serviceaccount.identity.meshtls.cluster.local", /exactly/],
    ["Web.default.serviceaccount.identity.meshtls.cluster.local", /service account/],
    ["web.-bad.serviceaccount.identity.meshtls.cluster.local", /namespace/],
    ["", /empty/],
  ])("rejects %s", (name, message) => {
    const e = codeAndMessage(() => parseIdentityName(name, {}));
    expect(e.code).toBe("ERR_NAME_INVALID");
    expect(e.message).toMatch(message);
  });
  it("rejects invalid parts when building", () => {
    expect(codeAndMessage(() => identityName({ serviceAccount: "UPPER", namespace: "x" })).code).toBe("ERR_NAME_INVALID");
    expect(codeAndMessage(() => identityName({ serviceAccount: "a", namespace: "b", trustDomain: "bad..td" })).code).toBe("ERR_NAME_INVALID");
    expect(codeAndMessage(() => identityName({ serviceAccount: "a".repeat(64), namespace: "b" })).code).toBe("ERR_NAME_INVALID");
  });
  it("classifies DNS labels and subdomains", () => {
    expect(isDnsLabel("a-b1")).toBe(true);
    expect(isDnsLabel("-a")).toBe(false);
    expect(isDnsLabel("a".repeat(64))).toBe(false);
    expect(isDnsSubdomain("cluster.local")).toBe(true);
    expect(isDnsSubdomain("cluster..local")).toBe(false);
    expect(isDnsSubdomain(`${"a".repeat(60)}.`.repeat(5) + "a")).toBe(false);
  });
});
