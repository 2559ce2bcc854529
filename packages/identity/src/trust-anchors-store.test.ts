import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createIssuer, createTrustAnchor, generateKeyPair, issueLeaf, pemEncode } from "@meshtls/pki";
import type { CertifiedKey } from "@meshtls/pki";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTrustAnchorsStore } from "./trust-anchors-store.ts";
import type { TrustAnchorsStore } from "./trust-anchors-store.ts";

const pem = (...certs: Uint8Array[]) => certs.map((c) => pemEncode("CERTIFICATE", c)).join("");

async function replace(file: string, content: string | Buffer): Promise<void> {
  await writeFile(`${file}.new`, content);
  await rename(`${file}.new`, file);
}

function nextBundle(store: TrustAnchorsStore, timeoutMs = 5000): Promise<Uint8Array[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no bundle change"));
    }, timeoutMs);
    const off = store.subscribe((anchors) => {
      clearTimeout(timer);
      off();
      resolve(anchors);
    });
  });
}

describe("createTrustAnchorsStore", () => {
  let root: string;
  let a: CertifiedKey;
  let b: CertifiedKey;
  let issuerUnderA: CertifiedKey;
  const stores: TrustAnchorsStore[] = [];

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "anchors-store-"));
    a = await createTrustAnchor();
    b = await createTrustAnchor();
    issuerUnderA = await createIssuer({ anchor: { certificate: a.certificate, privateKey: a.keyPair.privateKey } });
  });
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  function store(file: string, extra: Partial<Parameters<typeof createTrustAnchorsStore>[0]> = {}) {
    const s = createTrustAnchorsStore({ file, pollIntervalMs: 200, settleMs: 20, ...extra });
    stores.push(s);
    return s;
  }

  it("goes A → A+B → B, and keeps the bundle when a replacement is bad, with the reason", async () => {
    const registry = new Registry();
    const file = path.join(root, "anchors.crt");
    await writeFile(file, pem(a.certificate));
    // Checked by explicit reloads only (the watch and the poll are tested below), so each result is this step's.
    const s = store(file, { metricsRegistry: registry, pollIntervalMs: 600_000, settleMs: 600_000 });
    expect(await s.start()).toMatchObject({ result: "loaded", anchors: [a.certificate] });

    let changed = nextBundle(s);
    await replace(file, pem(a.certificate, b.certificate));
    expect(await s.reload()).toMatchObject({ result: "loaded" });
    expect(await changed).toEqual([a.certificate, b.certificate]);
    expect(await registry.getSingleMetricAsString("identity_trust_anchors")).toMatch(/identity_trust_anchors 2$/m);

    const bad: [string, string | Buffer, RegExp][] = [
      ["empty", "", /is empty/],
      ["empty", "\n  \n", /is empty/],
      ["bad_certificate", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", /not a PEM certificate bundle: .*non-base64/],
      ["bad_certificate", "hello", /not a PEM certificate bundle/],
      ["bad_certificate", "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n", /certificate 1 cannot be parsed/],
      ["not_ca", pem(b.certificate, await leaf()), /certificate 2 .* is not a CA certificate/],
    ];
    for (const [rejection, content, reason] of bad) {
      await replace(file, content);
      expect(await s.reload(), rejection).toMatchObject({ result: "rejected", rejection, reason: expect.stringMatching(reason) });
      expect(s.current()).toEqual([a.certificate, b.certificate]);
    }
    await rm(file);
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "unreadable", reason: expect.stringMatching(/ENOENT/) });
    // Refusals are counted once per content, not on every periodic check.
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "unreadable" });
    const counted = await registry.getSingleMetricAsString("identity_trust_anchors_rejected_total");
    expect(counted).toMatch(/reason="empty"} 2/);
    expect(counted).toMatch(/reason="bad_certificate"} 3/);
    expect(counted).toMatch(/reason="not_ca"} 1/);
    expect(counted).toMatch(/reason="unreadable"} 1/);
    expect(s.current()).toEqual([a.certificate, b.certificate]);

    // The bundle in use written back: nothing changes; then B alone.
    await writeFile(file, pem(a.certificate, b.certificate));
    expect(await s.reload()).toEqual({ result: "unchanged" });
    changed = nextBundle(s);
    await replace(file, pem(b.certificate));
    expect(await s.reload()).toMatchObject({ result: "loaded" });
    expect(await changed).toEqual([b.certificate]);
    expect(await registry.getSingleMetricAsString("identity_trust_anchors_loaded_total")).toMatch(/identity_trust_anchors_loaded_total 3$/m);
  });

  /** A leaf under A's issuer: not a CA, what a mistaken bundle most often holds. */
  async function leaf(): Promise<Uint8Array> {
    const keyPair = await generateKeyPair();
    return issueLeaf({
      issuer: { certificate: issuerUnderA.certificate, privateKey: issuerUnderA.keyPair.privateKey },
      publicKey: keyPair.publicKey,
      identity: "web.default.serviceaccount.identity.meshtls.cluster.local",
    });
  }

  it("refuses an oversized file without reading it whole", async () => {
    const file = path.join(root, "huge.crt");
    await writeFile(file, Buffer.alloc(4096, 0x41));
    const result = await store(file, { maxBytes: 1024 }).start();
    expect(result).toMatchObject({ result: "rejected", rejection: "too_large", reason: expect.stringMatching(/larger than 1024 bytes/) });
  });

  it("refuses a bundle whose anchors have all expired, at start too", async () => {
    const old = await createTrustAnchor({ lifetimeMs: 3600_000, now: () => new Date(Date.now() - 2 * 3600_000) });
    const file = path.join(root, "expired.crt");
    await writeFile(file, pem(old.certificate));
    expect(await store(file).start()).toMatchObject({ result: "rejected", rejection: "expired", reason: expect.stringMatching(/every trust anchor in it has expired/) });
    await writeFile(file, pem(old.certificate, a.certificate));
    expect(await store(file).start()).toMatchObject({ result: "loaded", anchors: [old.certificate, a.certificate] });
  });

  it("follows a Kubernetes ConfigMap ..data symlink swap", async () => {
    const dir = path.join(root, "configmap");
    const generation = async (name: string, content: string) => {
      await mkdir(path.join(dir, name), { recursive: true });
      await writeFile(path.join(dir, name, "ca-bundle.crt"), content);
    };
    await generation("..2026_11_29_a", pem(a.certificate));
    await symlink("..2026_11_29_a", path.join(dir, "..data"));
    await symlink("..data/ca-bundle.crt", path.join(dir, "ca-bundle.crt"));
    // No fs.watch help: a poll long enough that only the watch on the folder can be this quick.
    const s = store(path.join(dir, "ca-bundle.crt"), { pollIntervalMs: 60_000 });
    expect((await s.start()).result).toBe("loaded");
    const changed = nextBundle(s, 3000);
    await generation("..2026_11_29_b", pem(a.certificate, b.certificate));
    await symlink("..2026_11_29_b", path.join(dir, "..data_tmp"));
    await rename(path.join(dir, "..data_tmp"), path.join(dir, "..data"));
    expect(await changed).toEqual([a.certificate, b.certificate]);
  });

  it("catches a change fs.watch does not report, with the periodic check", async () => {
    const file = path.join(root, "polled.crt");
    await writeFile(file, pem(a.certificate));
    // File events wait a minute to settle: only the periodic check can see this change in time.
    const polled = createTrustAnchorsStore({ file, pollIntervalMs: 200, settleMs: 60_000 });
    stores.push(polled);
    await polled.start();
    const changed = nextBundle(polled, 3000);
    await writeFile(file, pem(b.certificate));
    expect(await changed).toEqual([b.certificate]);
  });
});
