// meshtls-injector under attack (issue #16): its HTTPS admission webhook gets malformed, oversized and random
// AdmissionReviews, malformed HTTP over TLS, plaintext junk and a connection flood; after each, a well-formed Pod
// CREATE review must still get its patch. (The slow-loris rows are in slow-loris.test.ts.)
import fc from "fast-check";
import { afterAll, beforeAll, describe, it } from "vitest";
import { REFUSED_4XX, refusedHttp } from "./support/admin-attacks.ts";
import { holdIdleConnections } from "./support/floods.ts";
import { postReview, podReview, reviewWorks, startInjector } from "./support/injector.ts";
import type { Webhook } from "./support/injector.ts";
import { poll, stopAll, tempDir } from "./support/processes.ts";
import { attack, createTally, expectHolds } from "./support/results.ts";
import type { Target } from "./support/results.ts";
import { exchange } from "./support/wire.ts";

const LISTENER = "injector webhook HTTPS";
/** --max-body-bytes of the webhook under attack. */
const MAX_BODY = 1024 * 1024;

/** A pod review with `mutate` applied to it (a deep copy). */
const reviewWith = (mutate: (review: { request: Record<string, unknown> & { object: Record<string, unknown> & { metadata: Record<string, unknown>; spec: Record<string, unknown> } } }) => void): string => {
  const review = podReview() as never;
  mutate(review);
  return JSON.stringify(review);
};

/** JSON nested `depth` deep: `{"x":{"x":…}}`. */
const nested = (depth: number): string => `${'{"x":'.repeat(depth)}1${"}".repeat(depth)}`;

describe("meshtls-injector under attack", () => {
  let webhook: Webhook;
  const target: Target = {
    get proc() {
      return webhook.proc;
    },
    serving: () => reviewWorks(webhook),
  };

  beforeAll(async () => {
    webhook = await startInjector(tempDir("injector"), "injector", ["--max-body-bytes", String(MAX_BODY)]);
  });
  afterAll(stopAll);

  /** 4xx, or (where the body is a well-formed review the webhook need not mesh) 200 with an answer for its uid. */
  const acceptable = (answer: { status: number; body: string } | undefined, okAllowed: boolean): boolean =>
    answer !== undefined && ((answer.status >= 400 && answer.status < 500) || (okAllowed && answer.status === 200 && answer.body.includes('"response"')));

  it(`${LISTENER}: malformed and hostile AdmissionReviews`, async () => {
    const bodies: [string, string | Buffer, boolean][] = [
      ["not JSON", "{not json", false],
      ["empty body", "", false],
      ["invalid UTF-8", Buffer.from([0x7b, 0xff, 0xfe, 0x22, 0xc3, 0x28, 0x7d]), false],
      ["null", "null", false],
      ["an array", "[]", false],
      ["a number", "42", false],
      ["no request", JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }), false],
      ["request: null", JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: null }), false],
      ["v1beta1", reviewWith((r) => Object.assign(r, { apiVersion: "admission.k8s.io/v1beta1" })), false],
      ["uid not a string", reviewWith((r) => (r.request.uid = { $ne: 1 })), false],
      ["object a string", reviewWith((r) => (r.request.object = "pod" as never)), true],
      ["containers not a list", reviewWith((r) => (r.request.object.spec.containers = { a: 1 })), true],
      ["annotations not strings", reviewWith((r) => (r.request.object.metadata.annotations = { "linkerd.io/inject": { enabled: true }, "config.linkerd.io/skip-inbound-ports": [1, 2] })), true],
      ["hostile annotation values", reviewWith((r) => (r.request.object.metadata.annotations = { "linkerd.io/inject": "enabled", "config.linkerd.io/skip-outbound-ports": "1-99999999,-5,abc", "config.linkerd.io/opaque-ports": "0,65536", "config.linkerd.io/default-inbound-policy": "../../x" })), true],
      ["__proto__ keys", `{"__proto__":{"allowed":true},"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"__proto__":{"uid":"x"}}}`, false],
      ["JSON nested 100,000 deep", `${"[".repeat(100_000)}${"]".repeat(100_000)}`, false],
      ["a pod nested 50,000 deep", reviewWith((r) => (r.request.object.spec.x = "NESTED")).replace('"NESTED"', nested(50_000)), true],
      ["a uid of 900 KiB", reviewWith((r) => (r.request.uid = "u".repeat(900 * 1024))), true],
      ["20,000 containers", reviewWith((r) => (r.request.object.spec.containers = Array.from({ length: 20_000 }, (_, i) => ({ name: `c${i}`, image: "i" })))), true],
      ["30,000 ports", reviewWith((r) => (r.request.object.spec.containers = [{ name: "app", image: "i", ports: Array.from({ length: 30_000 }, (_, i) => ({ containerPort: 1 + i })) }])), true],
    ];
    const row = await attack(target, LISTENER, `malformed and hostile reviews (${bodies.length})`, `${REFUSED_4XX} (a review it need not mesh may be allowed: 200 with its uid), within 10 s`, async () => {
      const tally = createTally();
      for (const [name, body, okAllowed] of bodies) {
        const answer = await postReview(webhook, body);
        const key = answer === undefined ? "no answer" : String(answer.status);
        tally.note(key, acceptable(answer, okAllowed), () => `${name}: ${key}${answer === undefined ? "" : ` ${answer.body.slice(0, 60).trim()}`}`);
      }
      return tally.outcome();
    });
    expectHolds(row);
  });

  it(`${LISTENER}: random JSON values and mutated reviews (fast-check, 40 runs)`, async () => {
    const row = await attack(target, LISTENER, "random JSON and mutated reviews (fast-check)", "a 4xx or a 200 answer for every body, never 5xx or silence", async () => {
      const tally = createTally();
      const valid = JSON.stringify(podReview());
      const mutated = fc.tuple(fc.nat({ max: valid.length - 1 }), fc.string({ minLength: 1, maxLength: 6 })).map(([at, junk]) => valid.slice(0, at) + junk + valid.slice(at + 1));
      const replaced = fc.tuple(fc.constantFrom("uid", "object", "metadata", "spec", "containers", "annotations", "kind", "operation", "namespace"), fc.jsonValue()).map(([key, value]) =>
        JSON.stringify(podReview(), (k, v: unknown) => (k === key ? value : v)),
      );
      await fc.assert(
        fc.asyncProperty(fc.oneof(fc.json(), mutated, replaced), async (body) => {
          const answer = await postReview(webhook, body);
          const key = answer === undefined ? "no answer" : String(answer.status);
          return tally.note(key, answer !== undefined && answer.status < 500, () => `${key} for ${body.slice(0, 60)}`) && webhook.proc.alive();
        }),
        { numRuns: 40, endOnFailure: true, interruptAfterTimeLimit: 40_000 },
      ).catch(() => undefined);
      return tally.outcome();
    });
    expectHolds(row);
  });

  it(`${LISTENER}: a 5 MiB review against a limit of 1 MiB`, async () => {
    const row = await attack(target, LISTENER, "a 5 MiB review (limit 1 MiB)", "413", async () => {
      const answer = await postReview(webhook, reviewWith((r) => (r.request.object.metadata.annotations = { pad: "p".repeat(5 * 1024 * 1024) })), { timeoutMs: 20_000 });
      return { result: answer === undefined ? "no answer" : String(answer.status), ok: answer?.status === 413 };
    });
    expectHolds(row);
  });

  it(`${LISTENER}: Content-Length of 10 GiB, 2 MiB sent, then silence`, async () => {
    const row = await attack(target, LISTENER, "Content-Length 10 GiB, 2 MiB sent", "413 (or a hang-up) within 10 s, without waiting for the rest", async () => {
      const head = `POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${10 * 1024 ** 3}\r\n\r\n`;
      const answer = await exchange(webhook.address, [Buffer.from(head, "latin1"), Buffer.alloc(2 * 1024 * 1024, 0x20)], { tls: { ca: webhook.caPem, servername: "localhost" }, timeoutMs: 10_000, enoughBytes: 12 });
      return refusedHttp(answer.bytes, answer.closedByServer);
    });
    expectHolds(row);
  });

  const line = (text: string): Buffer => Buffer.from(text, "latin1");
  const rawCases: [string, () => Buffer][] = [
    ["GET //[ HTTP/1.1", () => line("GET //[ HTTP/1.1\r\nHost: localhost\r\n\r\n")],
    ["GET / (not POST)", () => line("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")],
    ["POST /../../admin", () => line("POST /../../admin HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")],
    ["a 100 KiB header", () => line(`POST / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"a".repeat(100 * 1024)}\r\n\r\n`)],
    ["10,000 headers", () => line(`POST / HTTP/1.1\r\nHost: localhost\r\n${"X-A: b\r\n".repeat(10_000)}\r\n`)],
    ["4 KiB of binary junk", () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))],
    ["chunked body with a bad chunk size", () => line("POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")],
    ["Content-Length and chunked (smuggling)", () => line("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /live HTTP/1.1\r\n\r\n")],
  ];
  for (const [name, bytes] of rawCases) {
    it(`${LISTENER}: ${name} (over TLS)`, async () => {
      const row = await attack(target, LISTENER, `${name} (over TLS)`, REFUSED_4XX, async () => {
        const answer = await exchange(webhook.address, bytes(), { tls: { ca: webhook.caPem, servername: "localhost" }, timeoutMs: 5000, enoughBytes: 12 });
        return refusedHttp(answer.bytes, answer.closedByServer || answer.bytes.length >= 12);
      });
      expectHolds(row);
    });
  }

  it(`${LISTENER}: a plaintext HTTP request and junk instead of a ClientHello`, async () => {
    const row = await attack(target, LISTENER, "plaintext HTTP and junk instead of TLS", "the connection closed by the server within 5 s, nothing served", async () => {
      const results: string[] = [];
      let ok = true;
      for (const bytes of [line(`POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}`), Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 31) % 256))]) {
        const answer = await exchange(webhook.address, bytes, { timeoutMs: 5000 });
        const served = answer.bytes.toString("latin1").includes("HTTP/1.1 200");
        results.push(`${answer.closedByServer ? "closed" : "left open"} after ${answer.bytes.length} B`);
        ok &&= answer.closedByServer && !served;
      }
      return { result: results.join("; "), ok };
    });
    expectHolds(row);
  });

  it(`${LISTENER}: 2,000 idle connections (no ClientHello) while a review is made`, async () => {
    const count = 2000;
    const row = await attack(target, LISTENER, `${count} idle connections (no ClientHello)`, "a well-formed review meshed while they are held; every idle one closed by the server within 20 s (TLS handshake timeout)", async () => {
      const held = await holdIdleConnections(webhook.address, count);
      const openedAt = Date.now();
      const served = await reviewWorks(webhook);
      const allClosed = await poll(() => (held.closedByServer() >= count ? true : undefined), 20_000, 250);
      const closedAfterS = ((Date.now() - openedAt) / 1000).toFixed(1);
      const stillOpen = count - held.closedByServer();
      await held.release();
      return {
        result: `review ${served ? "meshed" : "NOT meshed"} while held; ${allClosed === true ? `all ${count} closed by the server after ${closedAfterS} s` : `${stillOpen} still open after 20 s`}`,
        ok: served && allClosed === true,
      };
    });
    expectHolds(row);
  });
});
