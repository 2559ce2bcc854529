import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createIssuer, createTrustAnchor, exportPrivateKey, generateKeyPair, issueLeaf, pemEncode } from "@meshtls/pki";
import type { CertifiedKey, CryptoKeyPair } from "@meshtls/pki";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createIssuerStore } from "./issuer-store.ts";
import { validateIssuer } from "./validate-issuer.ts";
import type { IssuerStore } from "./issuer-store.ts";

const HOUR = 3600_000;

async function files(issuer: { certificate: Uint8Array; keyPair: CryptoKeyPair }, extraCerts: Uint8Array[] = []) {
  return {
    cert: [issuer.certificate, ...extraCerts].map((c) => pemEncode("CERTIFICATE", c)).join(""),
    key: (await exportPrivateKey(issuer.keyPair.privateKey)) as string,
  };
}

async function writeLayout(dir: string, names: [string, string], content: { cert: string; key: string }) {
  await mkdir(dir, { recursive: true });
  // Write-then-rename, as tools that rotate files do.
  await writeFile(path.join(dir, `.${names[0]}.tmp`), content.cert);
  await writeFile(path.join(dir, `.${names[1]}.tmp`), content.key);
  await rename(path.join(dir, `.${names[0]}.tmp`), path.join(dir, names[0]));
  await rename(path.join(dir, `.${names[1]}.tmp`), path.join(dir, names[1]));
}

function nextIssuer(store: IssuerStore, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no issuer change"));
    }, timeoutMs);
    const off = store.subscribe((issuer) => {
      clearTimeout(timer);
      off();
      resolve(issuer.serialNumber);
    });
  });
}

describe("createIssuerStore", () => {
  let root: string;
  let anchor: CertifiedKey;
  let issuerA: CertifiedKey;
  let issuerB: CertifiedKey;
  const stores: IssuerStore[] = [];
  const anchorRef = () => ({ certificate: anchor.certificate, privateKey: anchor.keyPair.privateKey });

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "issuer-store-"));
    anchor = await createTrustAnchor();
    issuerA = await createIssuer({ anchor: anchorRef() });
    issuerB = await createIssuer({ anchor: anchorRef() });
  });
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  function store(dir: string, extra: Partial<Parameters<typeof createIssuerStore>[0]> = {}) {
    const s = createIssuerStore({ dir, trustAnchors: [anchor.certificate], pollIntervalMs: 200, settleMs: 20, ...extra });
    stores.push(s);
    return s;
  }

  it.each([
    ["issuer.crt", "issuer.key"],
    ["crt.pem", "key.pem"],
    ["tls.crt", "tls.key"],
  ] as [string, string][])("loads the %s / %s layout", async (cert, key) => {
    const dir = path.join(root, `layout-${cert}`);
    await writeLayout(dir, [cert, key], await files(issuerA));
    const s = store(dir);
    const result = await s.start();
    expect(result.result).toBe("loaded");
    const state = s.current();
    expect(state.ok && state.issuer.intermediates).toEqual([issuerA.certificate]);
    expect(state.ok && state.issuer.origin).toBe(`${path.join(dir, cert)} + ${path.join(dir, key)}`);
  });

  it("drops an anchor bundled in the certificate file from the intermediates", async () => {
    const dir = path.join(root, "bundled");
    await writeLayout(dir, ["tls.crt", "tls.key"], await files(issuerA, [anchor.certificate]));
    const s = store(dir);
    await s.start();
    const state = s.current();
    expect(state.ok && state.issuer.intermediates).toEqual([issuerA.certificate]);
  });

  it("says what is missing when the folder has no issuer", async () => {
    const dir = path.join(root, "empty");
    await mkdir(dir, { recursive: true });
    const result = await store(dir).start();
    expect(result).toMatchObject({ result: "rejected", rejection: "not_found", reason: expect.stringMatching(/expected issuer\.crt \+ issuer\.key/) });
  });

  describe("rotation", () => {
    it("follows a file replacement and a ..data symlink swap, and refuses bad replacements with a reason", async () => {
      const registry = new Registry();
      const dir = path.join(root, "rotate");
      await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(issuerA));
      const s = store(dir, { metricsRegistry: registry });
      const first = await s.start();
      expect(first.result).toBe("loaded");

      const changed = nextIssuer(s);
      await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(issuerB));
      await changed;
      expect(s.current().ok && (s.current() as { issuer: { certificate: Uint8Array } }).issuer.certificate).toEqual(issuerB.certificate);

      const past = () => new Date(Date.now() - 10 * HOUR);
      const expired = await createIssuer({ anchor: anchorRef(), lifetimeMs: HOUR, now: past });
      const otherAnchor = await createTrustAnchor();
      const foreign = await createIssuer({ anchor: { certificate: otherAnchor.certificate, privateKey: otherAnchor.keyPair.privateKey } });
      const leafKeys = await generateKeyPair();
      const nonCa = {
        certificate: await issueLeaf({ issuer: anchorRef(), publicKey: leafKeys.publicKey, identity: "web.default.serviceaccount.identity.meshtls.cluster.local" }),
        keyPair: leafKeys,
      };
      const mismatched = { certificate: issuerA.certificate, keyPair: await generateKeyPair() };
      const bad: [string, { certificate: Uint8Array; keyPair: CryptoKeyPair }, RegExp][] = [
        ["expired", expired, /expired at/],
        ["not_ca", nonCa, /is not a CA/],
        ["untrusted", foreign, /does not chain to the trust anchors/],
        ["key_mismatch", mismatched, /is not the private key of issuer certificate/],
      ];
      for (const [rejection, candidate, reason] of bad) {
        await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(candidate));
        const result = await s.reload();
        expect(result).toMatchObject({ result: "rejected", rejection, reason: expect.stringMatching(reason) });
        const state = s.current();
        expect(state.ok && state.issuer.certificate).toEqual(issuerB.certificate);
      }
      const counted = await registry.getSingleMetricAsString("identity_issuer_rejected_total");
      for (const [rejection] of bad) expect(counted).toMatch(new RegExp(`reason="${rejection}"} 1`));

      // Kubernetes Secret volume: files are symlinks through ..data, which is swapped atomically.
      const k8s = path.join(root, "k8s");
      const gen = async (name: string, issuer: { certificate: Uint8Array; keyPair: CryptoKeyPair }) => {
        const content = await files(issuer);
        await mkdir(path.join(k8s, name), { recursive: true });
        await writeFile(path.join(k8s, name, "tls.crt"), content.cert);
        await writeFile(path.join(k8s, name, "tls.key"), content.key);
      };
      await gen("..2026_01", issuerA);
      await symlink("..2026_01", path.join(k8s, "..data"));
      await symlink("..data/tls.crt", path.join(k8s, "tls.crt"));
      await symlink("..data/tls.key", path.join(k8s, "tls.key"));
      const k = store(k8s);
      expect((await k.start()).result).toBe("loaded");
      const swapped = nextIssuer(k);
      await gen("..2026_02", issuerB);
      await symlink("..2026_02", path.join(k8s, "..data_tmp"));
      await rename(path.join(k8s, "..data_tmp"), path.join(k8s, "..data"));
      await swapped;
      const state = k.current();
      expect(state.ok && state.issuer.certificate).toEqual(issuerB.certificate);
    });
  });

  it("follows changing trust anchors: a refused issuer is retried, the current one revalidated, and dropped once untrusted", async () => {
    const registry = new Registry();
    const anchorB = await createTrustAnchor();
    const underB = await createIssuer({ anchor: { certificate: anchorB.certificate, privateKey: anchorB.keyPair.privateKey } });
    let trusted: Uint8Array[] = [anchor.certificate];
    const dir = path.join(root, "anchors-change");
    await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(issuerA));
    const s = store(dir, { trustAnchors: () => trusted, metricsRegistry: registry });
    // Not started: no file events or timer run checks between the steps below, so each
    // explicit reload sees exactly the change the step made (watching is tested above).
    expect((await s.reload()).result).toBe("loaded");

    // The issuer under B arrives before B is trusted: refused, A kept.
    await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(underB));
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "untrusted" });
    expect(s.current()).toMatchObject({ ok: true, issuer: { certificate: issuerA.certificate } });

    // Bundle A+B: the same files are validated again, and now accepted without touching them.
    trusted = [anchor.certificate, anchorB.certificate];
    expect(await s.reload()).toMatchObject({ result: "loaded", issuer: { certificate: underB.certificate } });
    expect(await s.reload()).toEqual({ result: "unchanged" });

    // Bundle B only: the issuer under B stays (revalidated once, not reloaded from disk).
    const revalidated = nextIssuer(s);
    trusted = [anchorB.certificate];
    expect(await s.reload()).toMatchObject({ result: "loaded", issuer: { certificate: underB.certificate } });
    await revalidated;
    expect(await s.reload()).toEqual({ result: "unchanged" });
    expect(await registry.getSingleMetricAsString("identity_issuer_loaded_total")).toMatch(/identity_issuer_loaded_total 2$/m);

    // Bundle A only while the issuer is under B: fail closed, with the reason.
    trusted = [anchor.certificate];
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "untrusted", reason: expect.stringMatching(/does not chain to the trust anchors/) });
    expect(s.current()).toMatchObject({ ok: false, reason: expect.stringMatching(/does not chain to the trust anchors.*; load an issuer under the current trust anchors/) });
    expect(await s.reload()).toEqual({ result: "unchanged" });
    expect(await registry.getSingleMetricAsString("identity_issuer_rejected_total")).toMatch(/reason="untrusted"} 2/);

    // B trusted again: the same issuer files are accepted again.
    trusted = [anchorB.certificate];
    expect(await s.reload()).toMatchObject({ result: "loaded", issuer: { certificate: underB.certificate } });
    expect(s.current().ok).toBe(true);
  });

  it("reports an issuer that expires while loaded as unavailable", async () => {
    let clock = new Date();
    const dir = path.join(root, "expiring");
    const short = await createIssuer({ anchor: anchorRef(), lifetimeMs: HOUR });
    await writeLayout(dir, ["issuer.crt", "issuer.key"], await files(short));
    const s = store(dir, { now: () => clock });
    await s.start();
    expect(s.current().ok).toBe(true);
    clock = new Date(clock.getTime() + 2 * HOUR);
    const state = s.current();
    expect(state).toMatchObject({ ok: false, reason: expect.stringMatching(/expired at .*; rotate the issuer/) });
  });

  it("validateIssuer checks an in-memory issuer the same way", async () => {
    const ok = await validateIssuer({ certificate: issuerA.certificate, privateKey: issuerA.keyPair.privateKey, trustAnchors: [anchor.certificate] });
    expect(ok.intermediates).toEqual([issuerA.certificate]);
    await expect(
      validateIssuer({ certificate: issuerA.certificate, privateKey: issuerB.keyPair.privateKey, trustAnchors: [anchor.certificate] }),
    ).rejects.toMatchObject({ code: "ERR_ISSUER_INVALID", message: expect.stringMatching(/is not the private key/) });
    const other = await createTrustAnchor();
    await expect(
      validateIssuer({ certificate: issuerA.certificate, privateKey: issuerA.keyPair.privateKey, trustAnchors: [other.certificate] }),
    ).rejects.toMatchObject({ code: "ERR_ISSUER_INVALID", message: expect.stringMatching(/does not chain to the trust anchors/) });
  });
});
