// x509-limbo (C2SP, Apache-2.0) cases for the families a mesh verifier needs. Cases are never edited;
// a case is skipped only when its `features` name something this verifier does not implement.
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseCertificate } from "./certificate.ts";
import { decodeCertificates } from "./pem.ts";
import { vectorPath } from "./test-helpers.ts";
import { verifyChain, type ChainResult } from "./verify.ts";

interface LimboCase {
  id: string;
  features: string[];
  validation_kind: "SERVER" | "CLIENT";
  trusted_certs: string[];
  untrusted_intermediates: string[];
  peer_certificate: string;
  validation_time: string | null;
  extended_key_usage: string[];
  expected_result: "SUCCESS" | "FAILURE";
  expected_peer_name: { kind: string; value: string } | null;
  expected_peer_names: { kind: string; value: string }[];
  max_chain_depth: number | null;
}

const limbo = JSON.parse(readFileSync(vectorPath("x509-limbo/limbo.json"), "utf8")) as { testcases: LimboCase[] };

/** The families: id prefixes (ending in "::" or "-") or exact ids, as found in limbo.json. */
const FAMILIES: { name: string; prefixes: string[] }[] = [
  { name: "webpki::san", prefixes: ["webpki::san::"] },
  { name: "pathlen", prefixes: ["pathlen::"] },
  { name: "rfc5280::validity", prefixes: ["rfc5280::validity::"] },
  {
    name: "basic constraints",
    prefixes: [
      "rfc5280::intermediate-ca-without-ca-bit",
      "rfc5280::intermediate-ca-missing-basic-constraints",
      "rfc5280::root-missing-basic-constraints",
      "rfc5280::root-non-critical-basic-constraints",
      "rfc5280::root-inconsistent-ca-extensions",
      "rfc5280::no-basicconstraints",
      "rfc5280::ca-as-leaf",
      "rfc5280::ca-as-leaf-wrong-san",
      "webpki::ee-basicconstraints-ca",
      "webpki::ca-as-leaf",
    ],
  },
  { name: "critical extensions", prefixes: ["rfc5280::unknown-critical-extension-"] },
  { name: "rfc5280::nc", prefixes: ["rfc5280::nc::"] },
  { name: "webpki::nc", prefixes: ["webpki::nc::"] },
  { name: "EKU", prefixes: ["rfc5280::eku::", "webpki::eku::"] },
];

function inFamily(family: { prefixes: string[] }, id: string): boolean {
  return family.prefixes.some((p) => (p.endsWith("::") || p.endsWith("-") ? id.startsWith(p) : id === p));
}

/** Features this verifier implements; a case needing any other feature is skipped. */
const SUPPORTED_FEATURES = new Set(["max-chain-depth", "name-constraint-dn"]);

/**
 * limbo's namespaces are profiles: `webpki::` cases follow the Web PKI (CABF) profile, which forbids CA
 * leaves like the mesh profile does; all other cases follow plain RFC 5280 (where a CA may be a leaf).
 */
/** The reason code for a few failure cases, so that "failed" also means "failed for the right reason". */
const EXPECTED_CODES: Record<string, string> = {
  "pathlen::intermediate-violates-pathlen-0": "ERR_CHAIN_PATH_LENGTH",
  "pathlen::max-chain-depth-1-exhausted": "ERR_CHAIN_TOO_DEEP",
  "rfc5280::validity::expired-root": "ERR_CHAIN_EXPIRED",
  "rfc5280::validity::not-yet-valid-1-second": "ERR_CHAIN_NOT_YET_VALID",
  "rfc5280::unknown-critical-extension-ee": "ERR_CHAIN_CRITICAL_EXTENSION",
  "rfc5280::unknown-critical-extension-intermediate": "ERR_CHAIN_CRITICAL_EXTENSION",
  "rfc5280::eku::ee-wrong-eku": "ERR_CHAIN_EKU",
  "rfc5280::nc::excluded-dns-match": "ERR_CHAIN_NAME_CONSTRAINTS",
  "rfc5280::nc::permitted-ip-mismatch": "ERR_CHAIN_NAME_CONSTRAINTS",
  "webpki::nc::intermediate-permitted-excluded-subtrees-both-null": "ERR_CHAIN_NAME_CONSTRAINTS",
  "webpki::san::mismatch-domain-san": "ERR_CHAIN_NAME_MISMATCH",
  "webpki::san::no-san": "ERR_CHAIN_NAME_MISMATCH",
  "rfc5280::root-non-critical-basic-constraints": "ERR_CHAIN_NOT_CA",
  "rfc5280::root-inconsistent-ca-extensions": "ERR_CHAIN_KEY_USAGE",
  "webpki::ca-as-leaf": "ERR_CHAIN_NOT_CA",
};

function profileFor(id: string): "mesh" | "rfc5280" {
  return id.startsWith("webpki::") ? "mesh" : "rfc5280";
}

function expectedNameOf(name: { kind: string; value: string }): { dns: string } | { ip: string } | { email: string } | { uri: string } {
  if (name.kind === "DNS") return { dns: name.value };
  if (name.kind === "IP") return { ip: name.value };
  if (name.kind === "RFC822") return { email: name.value };
  return { uri: name.value };
}

/** Verifies once per expected peer name (limbo's client-side cases list several); all must verify. */
async function run(c: LimboCase, profile: "mesh" | "rfc5280"): Promise<ChainResult> {
  const names = c.expected_peer_name !== null ? [c.expected_peer_name] : c.expected_peer_names;
  const purpose = (c.extended_key_usage[0] ?? (c.validation_kind === "SERVER" ? "serverAuth" : "clientAuth")) as "serverAuth" | "clientAuth";
  let result: ChainResult | undefined;
  for (const name of names.length > 0 ? names : [null]) {
    result = await verifyChain({
      leaf: decodeCertificates(c.peer_certificate)[0] as Uint8Array,
      intermediates: c.untrusted_intermediates.flatMap((p) => decodeCertificates(p)),
      anchors: c.trusted_certs.flatMap((p) => decodeCertificates(p)),
      ...(c.validation_time === null ? {} : { now: new Date(c.validation_time) }),
      ...(name === null ? {} : { expectedName: expectedNameOf(name) }),
      purpose,
      ...(c.max_chain_depth === null ? {} : { maxDepth: c.max_chain_depth }),
      profile,
    });
    if (!result.ok) return result;
  }
  return result as ChainResult;
}

const counts = new Map<string, { total: number; passed: number; skipped: number; meshRejectedCaLeaf: number }>();
const selected = limbo.testcases.flatMap((c) => {
  const family = FAMILIES.find((f) => inFamily(f, c.id));
  return family ? [{ c, family: family.name }] : [];
});

describe("x509-limbo mesh families", () => {
  afterAll(() => {
    console.log("x509-limbo families (id prefixes or exact ids):");
    for (const f of FAMILIES) console.log(`  ${f.name}: ${f.prefixes.join(", ")}`);
    for (const [family, n] of counts) {
      console.log(`  ${family}: ${n.passed}/${n.total - n.skipped} passed, ${n.skipped} skipped by features; mesh profile rejects ${n.meshRejectedCaLeaf} RFC-valid CA/cert-sign leaves`);
    }
  });

  it.each(selected.map(({ c, family }) => [c.id, c, family] as const))("%s", async (_id, c, family) => {
    const n = counts.get(family) ?? { total: 0, passed: 0, skipped: 0, meshRejectedCaLeaf: 0 };
    counts.set(family, n);
    n.total++;
    if (c.features.some((f) => !SUPPORTED_FEATURES.has(f))) {
      n.skipped++;
      return;
    }
    const result = await run(c, profileFor(c.id));
    const detail = result.ok ? "ok" : `${result.code}: ${result.reason}`;
    if (process.env.LIMBO_DEBUG) console.log(`${c.id} ${c.expected_result} -> ${detail}`);
    expect(result.ok ? "SUCCESS" : "FAILURE", `${c.id} -> ${detail}`).toBe(c.expected_result);
    if (!result.ok) expect(result.code).toMatch(/^ERR_CHAIN_/);
    if (!result.ok && EXPECTED_CODES[c.id]) expect(result.code, result.reason).toBe(EXPECTED_CODES[c.id]);
    n.passed++;

    // The mesh default agrees with every case, except that it rejects leaves that are CAs or may sign certificates.
    const mesh = await run(c, "mesh");
    const leaf = parseCertificate(c.peer_certificate);
    const caLeaf = leaf.ca || leaf.keyUsage.includes("keyCertSign") || leaf.keyUsage.includes("cRLSign");
    if (caLeaf && c.expected_result === "SUCCESS") {
      expect(mesh.ok).toBe(false);
      if (!mesh.ok) expect(["ERR_CHAIN_NOT_CA", "ERR_CHAIN_KEY_USAGE"]).toContain(mesh.code);
      n.meshRejectedCaLeaf++;
    } else {
      expect(mesh.ok ? "SUCCESS" : "FAILURE", `mesh profile: ${c.id}`).toBe(c.expected_result);
    }
  });
});

describe("x509-limbo pathological cases (not a mesh family): bounded work", () => {
  const pathological = limbo.testcases.filter((c) => c.id.startsWith("pathological::"));
  it.each(pathological.map((c) => [c.id, c] as const))("%s finishes within 1 s with a coded result", async (_id, c) => {
    const started = performance.now();
    let result: ChainResult;
    try {
      result = await run(c, "rfc5280");
    } catch (err) {
      // Only oversized input may be refused before verification (the 64 KiB DER limit).
      expect(String(err)).toMatch(/larger than/);
      return;
    }
    expect(performance.now() - started).toBeLessThan(1000);
    if (!result.ok) expect(result.code).toMatch(/^ERR_CHAIN_/);
    else expect(c.expected_result).toBe("SUCCESS");
  });
});

describe("x509-limbo cases outside the families that the mesh verifier also gets right", () => {
  const extra: Record<string, string> = {
    "rfc5280::san::noncritical-with-empty-subject": "ERR_CHAIN_INVALID",
    "rfc5280::ski::critical-ski": "ERR_CHAIN_INVALID",
    "rfc5280::aki::critical-aki": "ERR_CHAIN_INVALID",
    "rfc5280::ca-empty-subject": "ERR_CHAIN_NOT_CA",
    "pathological::nc-dos-2": "ERR_CHAIN_NAME_CONSTRAINTS",
  };
  it.each(Object.entries(extra))("%s fails with %s", async (id, code) => {
    const c = limbo.testcases.find((t) => t.id === id);
    expect(c?.expected_result).toBe("FAILURE");
    const result = await run(c as LimboCase, "rfc5280");
    expect(result.ok ? "ok" : result.code).toBe(code);
  });
});
