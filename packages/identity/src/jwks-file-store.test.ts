import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import type { JSONWebKeySet, JWK } from "jose";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createJwksFileStore } from "./jwks-file-store.ts";
import type { JwksFileStore, JwksFileStoreOptions } from "./jwks-file-store.ts";

async function replace(file: string, content: string | Buffer): Promise<void> {
  await writeFile(`${file}.new`, content);
  await rename(`${file}.new`, file);
}

function nextSet(store: JwksFileStore, timeoutMs = 5000): Promise<JSONWebKeySet> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error("no JWKS change"));
    }, timeoutMs);
    const off = store.subscribe((jwks) => {
      clearTimeout(timer);
      off();
      resolve(jwks);
    });
  });
}

const kids = (set: JSONWebKeySet) => set.keys.map((k) => k.kid);
const text = (...keys: JWK[]) => JSON.stringify({ keys });

describe("createJwksFileStore", () => {
  let root: string;
  let a: JWK;
  let b: JWK;
  let privateA: JWK;
  const stores: JwksFileStore[] = [];

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "jwks-store-"));
    const pairA = await generateKeyPair("ES256", { extractable: true });
    const pairB = await generateKeyPair("ES256");
    a = { ...(await exportJWK(pairA.publicKey)), kid: "a", alg: "ES256", use: "sig" };
    b = { ...(await exportJWK(pairB.publicKey)), kid: "b", alg: "ES256", use: "sig" };
    privateA = { ...(await exportJWK(pairA.privateKey)), kid: "a", alg: "ES256" };
  });
  afterEach(() => {
    for (const s of stores.splice(0)) s.close();
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  function store(file: string, extra: Partial<JwksFileStoreOptions> = {}) {
    const s = createJwksFileStore({ file, pollIntervalMs: 200, settleMs: 20, ...extra });
    stores.push(s);
    return s;
  }

  it("goes A → A+B → B, and keeps the set when a replacement is bad, with the reason", async () => {
    const registry = new Registry();
    const file = path.join(root, "jwks.json");
    await writeFile(file, text(a));
    // Explicit reloads only (the watch and the poll are tested below), so each result is this step's.
    const s = store(file, { metricsRegistry: registry, maxBytes: 4096 });
    expect(kids(s.current())).toEqual([]);
    expect(await registry.getSingleMetricAsString("identity_token_jwks_keys")).toMatch(/^identity_token_jwks_keys 0$/m);

    const first = await s.reload();
    expect(first.result).toBe("loaded");
    expect(kids(s.current())).toEqual(["a"]);
    const setA = s.current();
    expect(await s.reload()).toEqual({ result: "unchanged" });
    expect(s.current()).toBe(setA); // the same object while nothing changed

    await replace(file, text(a, b));
    expect(await s.reload()).toMatchObject({ result: "loaded" });
    expect(kids(s.current())).toEqual(["a", "b"]);
    await replace(file, text(b));
    expect(await s.reload()).toMatchObject({ result: "loaded" });
    expect(kids(s.current())).toEqual(["b"]);
    const setB = s.current();

    const bad: [string | Buffer, string, RegExp][] = [
      ["{ not json", "bad_json", /not JSON/],
      ["", "empty", /is empty/],
      [JSON.stringify({ keys: [] }), "empty", /no keys/],
      [JSON.stringify([b]), "not_jwks", /not a JWKS/],
      [JSON.stringify({ kty: "EC" }), "not_jwks", /not a JWKS/],
      [text(b, { ...b, kid: "broken", x: "AAAA" }), "bad_key", /key 2 \(kid "broken"\) is not an importable public key/],
      [JSON.stringify({ keys: [b, "b"] }), "bad_key", /key 2 is not a JWK object/],
      [text(privateA), "private_key", /private or secret key/],
      [text({ kty: "oct", k: "c2VjcmV0", kid: "h" }), "private_key", /private or secret key/],
      [text({ ...b, alg: "ES384" }), "no_usable_key", /no key can verify/],
      [text({ ...b, use: "enc" }), "no_usable_key", /no key can verify/],
      [text(b, a, { ...a, kid: "padding".repeat(600) }), "too_large", /larger than 4096 bytes/],
    ];
    for (const [content, rejection, reason] of bad) {
      await replace(file, content);
      const result = await s.reload();
      expect(result).toMatchObject({ result: "rejected", rejection });
      expect(result.result === "rejected" && result.reason).toMatch(reason);
      expect(s.current()).toBe(setB);
    }

    // Unreadable: a folder where the file should be (mode 000 would not stop root), then no file at all.
    await rm(file);
    await mkdir(file);
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "unreadable" });
    // The same unreadable state is reported once, not at every poll.
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "unreadable" });
    await rm(file, { recursive: true });
    expect(await s.reload()).toMatchObject({ result: "rejected", rejection: "unreadable", reason: expect.stringMatching(/ENOENT/) });
    expect(s.current()).toBe(setB);

    // Back to the set in use: nothing to load.
    await writeFile(file, text(b));
    expect(await s.reload()).toEqual({ result: "unchanged" });

    const metrics = await registry.metrics();
    expect(metrics).toMatch(/^identity_token_jwks_loaded_total 3$/m);
    expect(metrics).toMatch(/^identity_token_jwks_keys 1$/m);
    for (const [reason, count] of [["bad_json", 1], ["empty", 2], ["not_jwks", 2], ["bad_key", 2], ["private_key", 2], ["no_usable_key", 2], ["too_large", 1], ["unreadable", 2]] as const) {
      expect(metrics).toMatch(new RegExp(`^identity_token_jwks_rejected_total\\{reason="${reason}"\\} ${count}$`, "m"));
    }
  });

  it("refuses a bad file at start with the reason; the set stays empty (every token refused)", async () => {
    const file = path.join(root, "missing", "jwks.json");
    const s = store(file);
    const first = await s.start();
    expect(first).toMatchObject({ result: "rejected", rejection: "unreadable" });
    expect(s.current().keys).toEqual([]);
  });

  it("follows a Kubernetes ConfigMap volume (..data symlink swap) through the watch and the poll", async () => {
    const cm = path.join(root, "cm");
    await mkdir(path.join(cm, "..gen_1"), { recursive: true });
    await writeFile(path.join(cm, "..gen_1", "jwks.json"), text(a));
    await symlink("..gen_1", path.join(cm, "..data"));
    await symlink("..data/jwks.json", path.join(cm, "jwks.json"));
    const s = store(path.join(cm, "jwks.json"));
    expect(await s.start()).toMatchObject({ result: "loaded" });
    expect(kids(s.current())).toEqual(["a"]);

    const swap = async (generation: number, content: string) => {
      await mkdir(path.join(cm, `..gen_${generation}`));
      await writeFile(path.join(cm, `..gen_${generation}`, "jwks.json"), content);
      await symlink(`..gen_${generation}`, path.join(cm, "..data_tmp"));
      await rename(path.join(cm, "..data_tmp"), path.join(cm, "..data"));
    };
    let next = nextSet(s);
    await swap(2, text(a, b));
    expect(kids(await next)).toEqual(["a", "b"]);
    next = nextSet(s);
    await swap(3, text(b));
    expect(kids(await next)).toEqual(["b"]);
  });

  it("polls when no file event arrives (a folder it cannot watch)", async () => {
    const dir = await mkdtemp(path.join(root, "poll-"));
    const file = path.join(dir, "jwks.json");
    await writeFile(file, text(a));
    const s = store(file, { settleMs: 60_000 }); // an event never leads to a check in time: only the poll can
    await s.start();
    const next = nextSet(s);
    await replace(file, text(b));
    expect(kids(await next)).toEqual(["b"]);
  });
});
