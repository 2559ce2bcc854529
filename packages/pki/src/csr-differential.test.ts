// createCsr is written with our own DER writer and node:crypto; pkijs is the reference it must agree with. For
// generated identities, SPIFFE IDs, common names and keys, the CertificationRequestInfo bytes equal what pkijs
// builds from the same inputs, and pkijs, parseCsr and `openssl req -verify` accept the signed request.
import * as asn1js from "asn1js";
import fc from "fast-check";
import * as pkijs from "pkijs";
import { describe, expect, it } from "vitest";
import { createCsr, parseCsr } from "./csr.ts";
import { children, readTlv, whole } from "./der-reader.ts";
import { encode, ia5String, seq } from "./der-writer.ts";
import { exportPublicKey, generateKeyPair } from "./keys.ts";
import { pemEncode } from "./pem.ts";
import { openssl } from "./test-helpers.ts";
import { crypto, type CryptoKeyPair } from "./webcrypto.ts";

const engine = new pkijs.CryptoEngine({ name: "node-webcrypto", crypto: crypto as never });

const copy = (b: Uint8Array) => new Uint8Array(b).buffer;

interface CsrInputs {
  identity: string;
  spiffeId?: string;
  commonName?: string;
}

/** The request the pkijs way, field by field as createCsr describes it, signed by pkijs. */
async function pkijsCsr(keyPair: CryptoKeyPair, inputs: CsrInputs): Promise<pkijs.CertificationRequest> {
  const request = new pkijs.CertificationRequest();
  request.version = 0;
  const cn = inputs.commonName ?? (inputs.identity.length <= 64 ? inputs.identity : "");
  if (cn !== "") request.subject.typesAndValues.push(new pkijs.AttributeTypeAndValue({ type: "2.5.4.3", value: new asn1js.Utf8String({ value: cn }) }));
  // The one place we differ on purpose: pkijs writes an empty subject as one RDN with no attributes (30 02 31 00),
  // which X.501 forbids (an RDN is SET SIZE (1..MAX)); createCsr writes the empty Name (30 00), as issued leaves do.
  else request.subject = new pkijs.RelativeDistinguishedNames({ schema: asn1js.fromBER(new Uint8Array([0x30, 0x00])).result });
  request.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(copy(await exportPublicKey(keyPair.publicKey, { format: "der" })));
  const names = [new pkijs.GeneralName({ type: 2, value: inputs.identity })];
  if (inputs.spiffeId !== undefined) names.push(new pkijs.GeneralName({ type: 6, value: inputs.spiffeId }));
  const san = new pkijs.Extension({ extnID: "2.5.29.17", critical: cn === "", extnValue: new pkijs.GeneralNames({ names }).toSchema().toBER(false) });
  request.attributes = [new pkijs.Attribute({ type: "1.2.840.113549.1.9.14", values: [new pkijs.Extensions({ extensions: [san] }).toSchema()] })];
  await request.sign(keyPair.privateKey as never, "SHA-256", engine);
  return request;
}

/** [CertificationRequestInfo, signatureAlgorithm] of a DER request. */
function infoAndAlgorithm(der: Uint8Array): [Uint8Array, Uint8Array] {
  const [info, alg] = children(der, readTlv(der, 0));
  return [whole(der, info!), whole(der, alg!)];
}

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
/** DNS identities: short ones (CN = identity) and ones over 64 characters (empty subject, critical SAN). */
const identityArb = fc.oneof(
  fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join(".")),
  fc.array(label, { minLength: 6, maxLength: 12 }).map((labels) => `${labels.join(".")}.serviceaccount.identity.meshtls.cluster.local`),
).filter((name) => name.length <= 253);
const segment = fc.stringMatching(/^[a-zA-Z0-9._-]{1,20}$/).filter((s) => s !== "." && s !== "..");
const spiffeIdArb = fc.tuple(label, segment, segment).map(([domain, ns, sa]) => `spiffe://${domain}.local/ns/${ns}/sa/${sa}`);
const commonNameArb = fc.oneof(fc.constant(""), fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }), fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 64 }))
  .filter((cn) => cn.length <= 64);
const inputsArb: fc.Arbitrary<CsrInputs> = fc.record({ identity: identityArb, spiffeId: spiffeIdArb, commonName: commonNameArb }, { requiredKeys: ["identity"] });

describe("createCsr against pkijs", () => {
  it("encodes the same CertificationRequestInfo and algorithm as pkijs; pkijs, parseCsr and openssl req -verify accept it", async () => {
    const seen = { runs: 0, emptySubject: 0, spiffeId: 0 };
    await fc.assert(
      fc.asyncProperty(inputsArb, async (inputs) => {
        const keyPair = await generateKeyPair();
        const ours = await createCsr({ keyPair, ...inputs });
        const reference = await pkijsCsr(keyPair, inputs);
        const [info, algorithm] = infoAndAlgorithm(ours);
        const [refInfo, refAlgorithm] = infoAndAlgorithm(new Uint8Array(reference.toSchema().toBER(false)));
        expect(Buffer.from(info).toString("hex")).toBe(Buffer.from(refInfo).toString("hex"));
        expect(Buffer.from(algorithm).toString("hex")).toBe(Buffer.from(refAlgorithm).toString("hex"));

        const parsedByPkijs = pkijs.CertificationRequest.fromBER(copy(ours));
        expect(await parsedByPkijs.verify(engine)).toBe(true);
        const summary = await parseCsr(ours);
        expect(summary.signatureValid).toBe(true);
        expect(summary.san.dns).toEqual([inputs.identity]);
        expect(summary.san.uri).toEqual(inputs.spiffeId === undefined ? [] : [inputs.spiffeId]);

        const verified = await openssl(["req", "-verify", "-noout"], { input: pemEncode("CERTIFICATE REQUEST", ours) });
        expect(verified.code, verified.stderr).toBe(0);
        expect(verified.stdout + verified.stderr).toMatch(/verify OK/);
        seen.runs++;
        if (summary.subject.text === "") seen.emptySubject++;
        if (inputs.spiffeId !== undefined) seen.spiffeId++;
      }),
      { numRuns: 200 },
    );
    // Both subject forms and both SAN forms were tried.
    expect(seen.runs).toBeGreaterThanOrEqual(200);
    expect(seen.emptySubject).toBeGreaterThan(0);
    expect(seen.spiffeId).toBeGreaterThan(0);
    expect(seen.spiffeId).toBeLessThan(seen.runs);
  }, 120_000);

  it("the SAN value is pkijs's GeneralNames encoding", () => {
    const names = new pkijs.GeneralNames({ names: [new pkijs.GeneralName({ type: 2, value: "a.b" }), new pkijs.GeneralName({ type: 6, value: "spiffe://c/d" })] });
    expect(encode(seq(ia5String(0x82, "a.b"), ia5String(0x86, "spiffe://c/d")))).toEqual(new Uint8Array(names.toSchema().toBER(false)));
  });
});
