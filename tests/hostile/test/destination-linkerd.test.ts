// meshtls-destination's Linkerd-facing APIs under attack (issues #12 and #17): the inbound policy port
// (InboundServerPolicies GetPort/WatchPort on --policy-addr) and Destination.GetProfile, over mTLS from a
// workload with a valid mesh certificate: raw HTTP/2 and gRPC abuse, malformed requests, names a peer chooses
// (metrics must not grow with them) and a one-peer stream flood (its share refused, other peers served).
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { GetDestination, PortSpec } from "@meshtls/api";
import { afterAll, beforeAll, describe, it } from "vitest";
import { call, describeCall, GET_PORT, GET_PROFILE, profileWorks, refusedCall, tlsOptions, WATCH_PORT, watchPortWorks } from "./support/grpc.ts";
import type { CallResult } from "./support/grpc.ts";
import { defineGrpcAttacks } from "./support/grpc-attacks.ts";
import { grpcMessage } from "./support/http2-frames.ts";
import { createMaterial, identityOf, startDestination } from "./support/mesh.ts";
import type { Leaf, Material, Service } from "./support/mesh.ts";
import { poll, sleep, stopAll, tempDir } from "./support/processes.ts";
import { attack, createTally, expectHolds } from "./support/results.ts";
import type { Outcome, Target } from "./support/results.ts";
import { callsOnOneConnection, describeStatuses, holdStreams } from "./support/stream-flood.ts";
import { httpGet, metricSum, scrape } from "./support/wire.ts";

const REGISTRY = `services:
  - name: b
    ports: [{ port: 80, targetPort: 8080 }]
    endpoints: [{ address: 127.0.1.2, serviceAccount: b, inboundPort: 4143 }]
workloads:
  - name: b-0
    namespace: default
    labels: { app: b }
    ports: [{ name: http, port: 8080 }]
servers:
  - name: b-http
    namespace: default
    podSelector: { matchLabels: { app: b } }
    port: http
    proxyProtocol: HTTP/1
    accessPolicy: all-authenticated
`;
const B_PORT: PortSpec = { workload: JSON.stringify({ ns: "default", pod: "b-0" }), port: 8080 };

/** Streams one peer may hold in the flood rows' destination (--max-streams-per-peer). */
const PER_PEER = 100;
const FLOOD = 300;

/** grpc-status codes that say "your request is wrong" or "no room": never OK, never INTERNAL/UNKNOWN. */
const CLIENT_ERRORS = new Set([3 /* INVALID_ARGUMENT */, 5 /* NOT_FOUND */, 8 /* RESOURCE_EXHAUSTED */, 11 /* OUT_OF_RANGE */]);

/** A protobuf string field (wire type 2) with raw bytes: what no generated encoder would send (invalid UTF-8). */
const rawStringField = (field: number, bytes: Buffer): Buffer => {
  const length: number[] = [];
  let n = bytes.length;
  while (n >= 0x80) {
    length.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  length.push(n);
  return Buffer.concat([Buffer.from([(field << 3) | 2, ...length]), bytes]);
};

/** A GetDestination (Get/GetProfile) request for `path` in namespace default. */
const destinationRequest = (path: string): Buffer => Buffer.from(GetDestination.encode({ scheme: "k8s", path, contextToken: '{"ns":"default"}' }).finish());

describe("meshtls-destination's policy API and GetProfile under attack", () => {
  let material: Material;
  /** Default limits: the raw HTTP/2 and gRPC attacks. */
  let destination: Service;
  /** `--max-streams-per-peer ${PER_PEER}`: the stream-flood rows. */
  let capped: Service;
  let evil: Leaf;
  /** A second workload: it must keep being served while `evil` floods. */
  let good: Leaf;

  const policyOf = (service: Service): Service => ({ ...service, grpc: service.policy ?? "" });
  /** Still serving: /live, a WatchPort and a GetProfile from the good peer get their first message. */
  const targetOf = (service: () => Service): Target => ({
    get proc() {
      return service().proc;
    },
    serving: async () =>
      (await httpGet(service().admin, "/live"))?.status === 200 &&
      (await watchPortWorks(service(), material, good, B_PORT)) &&
      (await profileWorks(service(), material, good)),
  });
  const target = targetOf(() => destination);
  const cappedTarget = targetOf(() => capped);
  const evilTls = (service: Service) => tlsOptions(service, material, evil);

  beforeAll(async () => {
    const dir = tempDir("destination-linkerd");
    material = await createMaterial(dir);
    [evil, good] = await Promise.all([material.leaf(identityOf("evil")), material.leaf(identityOf("good"))]);
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, REGISTRY);
    [destination, capped] = await Promise.all([
      startDestination(material, { name: "destination-linkerd", registryFile, tls: true }),
      startDestination(material, { name: "destination-capped", registryFile, tls: true, extra: ["--max-streams-per-peer", String(PER_PEER)] }),
    ]);
  });
  afterAll(stopAll);

  // WatchPort streams live as long as the proxy (one per inbound port); GetProfile streams as long as a
  // proxy's resolution: no deadline, but one connection holds at most --max-concurrent-streams (2,000).
  const flood = { maxOpenStreams: 2000, maxRssDeltaKiB: 48 * 1024 };
  const tlsOf = () => ({ ca: material.caPem, servername: destination.serverName, key: evil.keyPem, cert: evil.chainPem });
  defineGrpcAttacks("destination policy API (WatchPort) mTLS", () => ({ service: policyOf(destination), target, path: WATCH_PORT, tls: tlsOf() }), flood);
  defineGrpcAttacks("destination GetProfile mTLS", () => ({ service: destination, target, path: GET_PROFILE, tls: tlsOf() }), flood);

  /** Each request answered with a client error (or, where `okAllowed`, a valid answer); counts by outcome. */
  async function malformed(service: Service, method: string, requests: [string, Buffer, boolean][]): Promise<Outcome> {
    const tally = createTally();
    for (const [name, body, okAllowed] of requests) {
      const r: CallResult = await call(service, method, grpcMessage(body), { tls: evilTls(service), timeoutMs: 5000, firstMessageOnly: true });
      const answered = r.data.length >= 5 && r.grpcStatus === undefined;
      const key = answered ? "answered" : describeCall(r).split(" (")[0] ?? "";
      const ok = answered ? okAllowed : refusedCall(r) && (r.grpcStatus === undefined || CLIENT_ERRORS.has(r.grpcStatus));
      tally.note(key, ok, () => `${name}: ${answered ? "answered" : describeCall(r)}`);
    }
    return tally.outcome();
  }

  it("policy API: malformed PortSpecs (workload not JSON, huge, '..', ports 0/65536/2^32-1, invalid UTF-8)", async () => {
    const spec = (workload: string, port: number): Buffer => Buffer.from(PortSpec.encode({ workload, port }).finish());
    const requests: [string, Buffer, boolean][] = [
      ["workload not JSON", spec("{not json", 8080), false],
      ["workload of 60 KiB", spec(JSON.stringify({ ns: "default", pod: "x".repeat(60 * 1024) }), 8080), false],
      ["workload of 1 MiB (over the message limit)", spec("w".repeat(1024 * 1024), 8080), false],
      ["'..' as namespace and pod", spec(JSON.stringify({ ns: "..", pod: "../../etc" }), 8080), false],
      ["a pod and an external workload", spec(JSON.stringify({ ns: "default", pod: "b-0", external_workload: "x" }), 8080), false],
      ["an array", spec("[1,2,3]", 8080), false],
      ["port 0", spec(B_PORT.workload, 0), false],
      ["port 65536", spec(B_PORT.workload, 65536), false],
      ["port 2^32-1", spec(B_PORT.workload, 0xffffffff), false],
      ["invalid UTF-8 workload", rawStringField(1, Buffer.from([0xff, 0xfe, 0x7b, 0xc3, 0x28, 0x00])), false],
      ["empty message", Buffer.alloc(0), false],
    ];
    for (const method of [GET_PORT, WATCH_PORT]) {
      const name = method === GET_PORT ? "GetPort" : "WatchPort";
      const row = await attack(target, "destination policy API mTLS", `malformed PortSpecs (${name}, ${requests.length})`, "INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED for each, never OK, INTERNAL or silence", () =>
        malformed(policyOf(destination), method, requests),
      );
      expectHolds(row);
    }
  });

  /**
   * 1,000 calls naming what the peer chooses, on one connection (the cost of 1,000 fresh mTLS connections is
   * the connection rows' business): nothing is kept per name once the streams end, and no metric label takes a
   * name. RSS bound: V8 collects lazily; 1,000 GetProfiles cost +42-47 MiB before a major GC, and 8,000 level off
   * at +150 MiB with the heap used dropping back (82 MiB) after one — garbage, not state kept per name.
   */
  async function uniqueNames(service: Service, method: string, streamsMetric: string, request: () => Uint8Array): Promise<Outcome> {
    const before = await scrape(service.admin);
    const rssBefore = service.proc.rssKiB();
    const address = method === WATCH_PORT ? (service.policy ?? "") : service.grpc;
    const seen = await callsOnOneConnection(address, method, Array.from({ length: 1000 }, request), { tls: evilTls(service) });
    await sleep(500);
    const after = await scrape(service.admin);
    const rss = service.proc.rssKiB() - rssBefore;
    const open = metricSum(after, streamsMetric);
    const counts = [...seen].map(([k, n]) => `${k}×${n}`).join(", ");
    return {
      result: `${counts}; ${streamsMetric} ${open} after; /metrics ${before.length} → ${after.length} B; RSS +${(rss / 1024).toFixed(1)} MiB`,
      ok: after.length - before.length <= 2048 && rss <= 64 * 1024 && open === 0 && !seen.has("no answer"),
    };
  }
  const randomPort = (): number => 1 + (randomBytes(2).readUInt16BE(0) % 65535);

  it("policy API: 1,000 WatchPorts for workloads nobody has (names the peer chooses): metrics and memory do not grow with them", async () => {
    const row = await attack(target, "destination policy API mTLS", "1,000 unique unknown workloads (WatchPort)", "each refused or answered; no stream left open, /metrics +2 KiB at most, RSS +64 MiB at most", () =>
      uniqueNames(destination, WATCH_PORT, "policy_watch_streams", () =>
        PortSpec.encode({ workload: JSON.stringify({ ns: `ns-${randomBytes(6).toString("hex")}`, pod: `pod-${randomBytes(8).toString("hex")}` }), port: randomPort() }).finish(),
      ),
    );
    expectHolds(row);
  });

  /**
   * `evil` opens FLOOD `method` streams on `capped` (a share of PER_PEER each): the rest must be refused
   * RESOURCE_EXHAUSTED and counted in `refusedMetric`{reason="max_streams_per_peer"} while `otherServed` (another peer) succeeds.
   */
  async function onePeerFlood(address: string, method: string, request: Uint8Array, refusedMetric: string, otherServed: () => Promise<boolean>): Promise<Outcome> {
    const counted = (text: string) => metricSum(text, refusedMetric, 'reason="max_streams_per_peer"');
    const before = counted(await scrape(capped.admin));
    const flood = await holdStreams(address, method, request, FLOOD, { tls: evilTls(capped) });
    // Refusals may lag on a loaded machine: wait until every stream is held or refused (10 s at most).
    await poll(() => (flood.held() + (flood.statuses.get(8) ?? 0) >= FLOOD ? true : undefined), 10_000, 100);
    const served = await otherServed();
    const held = flood.held();
    const other = flood.other();
    flood.close();
    const after = counted(await scrape(capped.admin));
    const refused = flood.statuses.get(8) ?? 0;
    return {
      result: `${held} held, ${describeStatuses(flood.statuses)}, ${other} other; refused_total +${after - before}; other peer ${served ? "served" : "NOT served"}`,
      ok: held === PER_PEER && refused === FLOOD - PER_PEER && after - before === FLOOD - PER_PEER && served,
    };
  }

  it(`policy API: one peer opens ${FLOOD} WatchPort streams against a share of ${PER_PEER}; another peer is served meanwhile`, async () => {
    const expected = `${FLOOD - PER_PEER} refused RESOURCE_EXHAUSTED and counted in policy_watch_refused_total{reason="max_streams_per_peer"}; another peer's WatchPort served while ${PER_PEER} are held`;
    const row = await attack(cappedTarget, "destination policy API mTLS", `${FLOOD} WatchPorts from one peer (share ${PER_PEER})`, expected, () =>
      onePeerFlood(capped.policy ?? "", WATCH_PORT, PortSpec.encode(B_PORT).finish(), "policy_watch_refused_total", () => watchPortWorks(capped, material, good, B_PORT)),
    );
    expectHolds(row);
  });

  it("GetProfile: malformed and hostile paths (huge, invalid UTF-8, '..', ports out of range, IP:port junk)", async () => {
    const requests: [string, Buffer, boolean][] = [
      ["a 60 KiB name", destinationRequest(`${"a".repeat(60 * 1024)}.default.svc.cluster.local:80`), false],
      ["a 1 MiB name (over the message limit)", destinationRequest("n".repeat(1024 * 1024)), false],
      ["a 64-character label", destinationRequest(`${"l".repeat(64)}.default.svc.cluster.local:80`), false],
      ["'..' segments", destinationRequest("../../etc/passwd:80"), false],
      ["'..' as the namespace", destinationRequest("b....svc.cluster.local:80"), false],
      ["port 0", destinationRequest("b.default.svc.cluster.local:0"), false],
      ["port 65536", destinationRequest("b.default.svc.cluster.local:65536"), false],
      ["port 99999999999", destinationRequest("b.default.svc.cluster.local:99999999999"), false],
      ["a negative port", destinationRequest("b.default.svc.cluster.local:-80"), false],
      ["two ports", destinationRequest("b.default.svc.cluster.local:80:80"), false],
      ["IP with port 0", destinationRequest("10.0.0.1:0"), false],
      ["IP 256.1.1.1", destinationRequest("256.1.1.1:80"), false],
      ["unbracketed IPv6", destinationRequest("::1:80"), false],
      ["bracket never closed", destinationRequest("[::1:80"), false],
      ["IPv6 with a zone", destinationRequest("[fe80::1%eth0]:80"), false],
      ["empty path", destinationRequest(""), false],
      ["only a colon", destinationRequest(":"), false],
      ["NUL and CR bytes", destinationRequest("b.default\u0000.svc\r\n.cluster.local:80"), false],
      ["percent-encoded dots", destinationRequest("%2e%2e.default.svc.cluster.local:80"), false],
      ["invalid UTF-8 path", Buffer.concat([rawStringField(1, Buffer.from("k8s")), rawStringField(2, Buffer.from([0xff, 0xfe, 0x3a, 0x38, 0x30]))]), false],
      ["a context token of 60 KiB", Buffer.from(GetDestination.encode({ scheme: "k8s", path: "b.default.svc.cluster.local:80", contextToken: "{".repeat(60 * 1024) }).finish()), true],
      // A pod IP nobody knows is a valid question: Linkerd answers with the address itself (no identity).
      ["an unknown IP:port", destinationRequest("10.9.8.7:8080"), true],
    ];
    const row = await attack(target, "destination GetProfile mTLS", `malformed paths (${requests.length})`, "INVALID_ARGUMENT (or RESOURCE_EXHAUSTED over the message limit) for each malformed path, never OK, INTERNAL or silence", () =>
      malformed(destination, GET_PROFILE, requests),
    );
    expectHolds(row);
  });

  it("GetProfile: 1,000 unique names and IP:ports the peer chooses: metrics and memory do not grow with them", async () => {
    const row = await attack(target, "destination GetProfile mTLS", "1,000 unique names and IP:ports", "each answered or refused; no stream left open, /metrics +2 KiB at most, RSS +64 MiB at most", () => {
      let i = 0;
      return uniqueNames(destination, GET_PROFILE, "destination_get_streams", () => {
        const r = randomBytes(3);
        const path = i++ % 2 === 0 ? `svc-${randomBytes(8).toString("hex")}.ns-${randomBytes(4).toString("hex")}.svc.cluster.local:${randomPort()}` : `10.${r[0]}.${r[1]}.${r[2]}:${randomPort()}`;
        return destinationRequest(path);
      });
    });
    expectHolds(row);
  });

  it(`GetProfile: one peer opens ${FLOOD} streams against a share of ${PER_PEER}; another peer is served meanwhile`, async () => {
    const expected = `${FLOOD - PER_PEER} refused RESOURCE_EXHAUSTED and counted in destination_get_refused_total{reason="max_streams_per_peer"}; another peer's GetProfile served while ${PER_PEER} are held`;
    const row = await attack(cappedTarget, "destination GetProfile mTLS", `${FLOOD} GetProfiles from one peer (share ${PER_PEER})`, expected, () =>
      onePeerFlood(capped.grpc, GET_PROFILE, destinationRequest("b.default.svc.cluster.local:80"), "destination_get_refused_total", () => profileWorks(capped, material, good)),
    );
    expectHolds(row);
  });
});
