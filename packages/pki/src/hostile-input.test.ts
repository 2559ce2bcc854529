// Property tests: random and mutated DER/PEM fed to every parser. Only PkiError may escape; nothing hangs.
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { createIssuer, createTrustAnchor, issueLeaf } from "./ca.ts";
import { parseCertificate } from "./certificate.ts";
import { createCsr, parseCsr } from "./csr.ts";
import { PkiError } from "./errors.ts";
import { importPrivateKey, importPublicKey } from "./key-import.ts";
import { exportPrivateKey, exportPublicKey, generateKeyPair } from "./keys.ts";
import { parseIdentityName, parseSpiffeId } from "./names.ts";
import { decodeCertificates, pemDecode, pemEncode, toDer } from "./pem.ts";
import { verifyChain } from "./verify.ts";

const RUNS = 250;
/** One call may take at most this long; a slower call counts as a hang. */
const CALL_LIMIT_MS = 2000;

type Edit = { pos: number; kind: "flip" | "set" | "delete" | "insert" | "truncate"; byte: number };

function mutate(seed: Uint8Array, edits: Edit[]): Uint8Array {
  let out = Array.from(seed);
  for (const e of edits) {
    if (out.length === 0) break;
    const pos = e.pos % out.length;
    if (e.kind === "flip") out[pos] = (out[pos] ?? 0) ^ (1 << (e.byte % 8));
    else if (e.kind === "set") out[pos] = e.byte;
    else if (e.kind === "delete") out.splice(pos, 1);
    else if (e.kind === "insert") out.splice(pos, 0, e.byte);
    else out = out.slice(0, pos);
  }
  return new Uint8Array(out);
}

const editArb = fc.record({
  pos: fc.nat(),
  kind: fc.constantFrom<Edit["kind"]>("flip", "set", "delete", "insert", "truncate"),
  byte: fc.integer({ min: 0, max: 255 }),
});

/** Either fresh random bytes or a valid seed with a few byte-level edits. */
function bytesArb(seeds: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    fc.uint8Array({ maxLength: 1024 }),
    fc.tuple(fc.constantFrom(...seeds), fc.array(editArb, { minLength: 1, maxLength: 6 })).map(([s, e]) => mutate(s, e)),
    fc.uint8Array({ maxLength: 64 }).map((tail) => new Uint8Array([0x30, 0x82, 0x01, 0x00, ...tail])),
  );
}

/** Mutated PEM text: edits on the base64 body, labels and lines, or random text. */
function pemArb(seeds: Uint8Array[], label: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength: 400 }),
    bytesArb(seeds).map((der) => pemEncode(label, der)),
    fc.tuple(fc.constantFrom(...seeds), fc.array(editArb, { minLength: 1, maxLength: 6 })).map(([s, e]) =>
      new TextDecoder().decode(mutate(new TextEncoder().encode(pemEncode(label, s)), e)),
    ),
    fc.tuple(fc.constantFrom(...seeds), fc.constantFrom("CERTIFICATE", "X", "", "PRIVATE KEY", "EC PRIVATE KEY")).map(
      ([s, l]) => `junk\n-----BEGIN ${l}-----\n${Buffer.from(s).toString("base64")}\n-----END ${label}-----\n`,
    ),
  );
}

async function onlyPkiErrors(fn: () => unknown): Promise<void> {
  const started = performance.now();
  try {
    await fn();
  } catch (err) {
    if (!(err instanceof PkiError)) throw new Error(`non-PkiError escaped: ${String(err)}`, { cause: err });
    expect(typeof err.code).toBe("string");
  }
  const elapsed = performance.now() - started;
  if (elapsed > CALL_LIMIT_MS) throw new Error(`call took ${elapsed.toFixed(0)} ms`);
}

describe("hostile input", () => {
  const seeds: Record<string, Uint8Array[]> = {};
  let anchorDer: Uint8Array;
  let issuerDer: Uint8Array;
  let leafDer: Uint8Array;

  beforeAll(async () => {
    const kp = await generateKeyPair();
    const anchor = await createTrustAnchor({});
    const issuer = await createIssuer({ anchor: { certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey } });
    const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";
    leafDer = await issueLeaf({ issuer: { certificate: issuer.certificate, privateKey: issuer.keyPair.privateKey }, publicKey: kp.publicKey, identity, spiffeId: "spiffe://cluster.local/ns/default/sa/web" });
    anchorDer = anchor.certificate;
    issuerDer = issuer.certificate;
    seeds.cert = [anchorDer, issuerDer, leafDer];
    seeds.csr = [await createCsr({ keyPair: kp, identity, spiffeId: "spiffe://cluster.local/ns/default/sa/web" })];
    seeds.key = [await exportPrivateKey(kp.privateKey, { format: "der" })];
    seeds.spki = [await exportPublicKey(kp.publicKey, { format: "der" })];
  });

  const opts = { numRuns: RUNS, seed: 20261128 };

  it("pemDecode, toDer, decodeCertificates", async () => {
    await fc.assert(
      fc.asyncProperty(pemArb(seeds.cert!, "CERTIFICATE"), bytesArb(seeds.cert!), async (text, der) => {
        await onlyPkiErrors(() => pemDecode(text));
        await onlyPkiErrors(() => toDer(text, "CERTIFICATE"));
        await onlyPkiErrors(() => toDer(der, "CERTIFICATE REQUEST"));
        await onlyPkiErrors(() => decodeCertificates(text));
        await onlyPkiErrors(() => decodeCertificates(der));
      }),
      opts,
    );
  });

  it("parseCertificate", async () => {
    await fc.assert(
      fc.asyncProperty(bytesArb(seeds.cert!), pemArb(seeds.cert!, "CERTIFICATE"), async (der, pem) => {
        await onlyPkiErrors(() => parseCertificate(der));
        await onlyPkiErrors(() => parseCertificate(pem));
      }),
      opts,
    );
  });

  it("parseCsr", async () => {
    await fc.assert(
      fc.asyncProperty(bytesArb(seeds.csr!), pemArb(seeds.csr!, "CERTIFICATE REQUEST"), async (der, pem) => {
        await onlyPkiErrors(() => parseCsr(der));
        await onlyPkiErrors(() => parseCsr(pem));
      }),
      opts,
    );
  });

  it("importPrivateKey and importPublicKey", async () => {
    await fc.assert(
      fc.asyncProperty(bytesArb(seeds.key!), pemArb(seeds.key!, "PRIVATE KEY"), bytesArb(seeds.spki!), pemArb(seeds.spki!, "PUBLIC KEY"), async (k, kp, s, sp) => {
        await onlyPkiErrors(() => importPrivateKey(k));
        await onlyPkiErrors(() => importPrivateKey(kp));
        await onlyPkiErrors(() => importPrivateKey(kp.replaceAll("PRIVATE KEY", "EC PRIVATE KEY")));
        await onlyPkiErrors(() => importPublicKey(s));
        await onlyPkiErrors(() => importPublicKey(sp));
      }),
      { ...opts, numRuns: 150 },
    );
  });

  it("parseSpiffeId and parseIdentityName", async () => {
    const idArb = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.string({ unit: fc.constantFrom(..."spifeS:/.-_aZ9%@?#"), maxLength: 60 }),
      fc.string({ maxLength: 80 }).map((s) => `spiffe://${s}`),
      fc.string({ maxLength: 80 }).map((s) => `${s}.serviceaccount.identity.meshtls.cluster.local`),
    );
    await fc.assert(
      fc.asyncProperty(idArb, async (s) => {
        await onlyPkiErrors(() => parseSpiffeId(s));
        await onlyPkiErrors(() => parseIdentityName(s, {}));
        await onlyPkiErrors(() => parseIdentityName(s, { trustDomain: s, controlNamespace: s }));
      }),
      { ...opts, numRuns: 1000 },
    );
  });

  it("verifyChain never throws and never accepts a mutated chain it cannot verify", async () => {
    await fc.assert(
      fc.asyncProperty(bytesArb(seeds.cert!), bytesArb(seeds.cert!), bytesArb(seeds.cert!), async (leaf, mid, anchor) => {
        const started = performance.now();
        const r = await verifyChain({ leaf, intermediates: [mid, issuerDer], anchors: [anchor, anchorDer] });
        expect(performance.now() - started).toBeLessThan(CALL_LIMIT_MS);
        if (r.ok) {
          // Only an intact leaf (DER-identical to one we issued) can verify against the real anchor.
          expect(r.chain[0]?.der).toEqual(leafDer);
        } else {
          expect(r.code).toMatch(/^ERR_CHAIN_/);
          expect(r.reason.length).toBeGreaterThan(0);
        }
      }),
      { ...opts, numRuns: 200 },
    );
  });

  it("deeply nested, indefinite-length and oversized DER fail fast with PkiError", async () => {
    const nested = new Uint8Array(20_000).map((_, i) => (i % 2 === 0 ? 0x30 : 0x80));
    const deep = new Uint8Array(40_000);
    for (let i = 0; i < 20_000; i++) {
      deep[i * 2] = 0x30;
      deep[i * 2 + 1] = 0x81;
    }
    for (const input of [nested, deep, new Uint8Array(70_000).fill(0x30), new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff])]) {
      await onlyPkiErrors(() => parseCertificate(input));
      await onlyPkiErrors(() => parseCsr(input));
      await onlyPkiErrors(() => importPrivateKey(input));
      await onlyPkiErrors(() => importPublicKey(input));
      expect((await verifyChain({ leaf: input, anchors: [input] })).ok).toBe(false);
    }
    await onlyPkiErrors(() => pemDecode(`-----BEGIN A-----\n${"QUFB".repeat(300_000)}\n-----END A-----\n`));
  });
});
