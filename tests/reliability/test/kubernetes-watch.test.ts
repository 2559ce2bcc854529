// The destination in Kubernetes mode losing its watches, under steady traffic A → b: watches dropped mid-stream,
// answered 410 Gone (as a status and as an in-stream ERROR event), answered 500 for a few seconds, and the API
// server gone altogether. b's EndpointSlice changes while the watch is down; no request may fail, the destination
// must serve the change once the watch is back, and A must follow it (reach a gained endpoint, leave a lost one).
import { afterAll, beforeAll, describe, it } from "vitest";
import { authorityB, poll, rssOf, sleep } from "./support/mesh.ts";
import type { Endpoint } from "./support/mesh.ts";
import { startKubernetesMesh, watchEndpoints } from "./support/kubernetes-mesh.ts";
import type { EndpointWitness, KubernetesMesh } from "./support/kubernetes-mesh.ts";
import { figures, record } from "./support/results.ts";
import { requestVia, startTraffic } from "./support/traffic.ts";
import type { Traffic } from "./support/traffic.ts";

const SLICES = "/apis/discovery.k8s.io/v1/endpointslices";
/** How long a change may take once the watch is back (the reflector's backoff is at most 30 s; the machine is loaded). */
const CONVERGE_MS = 60_000;
/** After the destination served a loss, how long A may still send to the lost endpoint (its own stream gets the same update; the machine is loaded). */
const LOSS_GRACE_MS = 2000;

/** A slice change: the endpoints b has afterwards, and the one whose answers show that A follows it. */
interface Change {
  to: Endpoint[];
  /** `gain`: A reaches this endpoint; `lose`: A no longer sends to it. */
  kind: "gain" | "lose";
  endpoint: Endpoint;
}

/** When the destination served a change and when A followed it (ms since the epoch), and A's answers from a lost endpoint after the grace. */
interface Followed {
  servedAt: number | undefined;
  /** Gain: A's first answer from the endpoint; loss: A's last answer from it. */
  followedAt: number | undefined;
  late: number;
  ok: boolean;
}

describe("destination in Kubernetes mode: the watch lost", () => {
  let mesh: KubernetesMesh;
  let witness: EndpointWitness;
  /** b's endpoints as the slice says now. */
  let current: Endpoint[];

  beforeAll(async () => {
    mesh = await startKubernetesMesh({ name: "kubernetes-watch", net: 21, endpoints: 2, initial: 1 });
    current = [mesh.b[0]!];
    witness = watchEndpoints(mesh.destination.grpc, authorityB);
  });

  afterAll(async () => {
    witness?.close();
    await mesh?.close();
  });

  const nameOf = (e: Endpoint): string => `b${e.ip.slice(e.ip.lastIndexOf(".") + 1)}`;

  /** The next change of the sequence: gain the missing endpoint, else lose the first one. */
  function nextChange(): Change {
    const missing = mesh.b.find((e) => !current.includes(e));
    const change: Change = missing !== undefined ? { to: [...current, missing], kind: "gain", endpoint: missing } : { to: current.slice(1), kind: "lose", endpoint: current[0]! };
    current = change.to;
    return change;
  }

  /** Watch requests for EndpointSlices so far. */
  const sliceWatches = (): number => mesh.api.requests().filter((r) => r.path === SLICES && r.query["watch"] === "true").length;
  const sliceLists = (): number => mesh.api.requests().filter((r) => r.path === SLICES && r.query["watch"] === undefined).length;

  /** Resolves with when the `n`-th EndpointSlice watch request after `before` arrived (ms since the epoch). */
  const watchRequest = (before: number, n = 1): Promise<number | undefined> => poll(() => (sliceWatches() >= before + n ? Date.now() : undefined), CONVERGE_MS, 20);

  /** Waits until the destination serves the change and A follows it (see {@link Followed}). */
  async function followed(traffic: Traffic, change: Change, since: number): Promise<Followed> {
    const answer = `200 ${nameOf(change.endpoint)}`;
    const servedAt = await witness.served(change.to.map((e) => e.ip), since, CONVERGE_MS);
    if (servedAt === undefined) return { servedAt, followedAt: undefined, late: 0, ok: false };
    if (change.kind === "gain") {
      // A's balancer tries a new endpoint once its default RTT (30 ms, decaying toward 0 over 10 s) is below the warm
      // one's cost: 10 s × ln(30 ms / warm cost), about 27 s beside a 2 ms endpoint, not at once.
      const followedAt = await poll(() => traffic.since(since).find((o) => o.result === answer)?.at, CONVERGE_MS, 100);
      return { servedAt, followedAt, late: 0, ok: followedAt !== undefined };
    }
    await sleep(LOSS_GRACE_MS + 2000);
    const fromLost = traffic.since(since).filter((o) => o.result === answer);
    const late = fromLost.filter((o) => o.at > servedAt + LOSS_GRACE_MS).length;
    return { servedAt, followedAt: fromLost.at(-1)?.at ?? since, late, ok: late === 0 };
  }

  const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
  const after = (at: number | undefined, from: number | undefined): string => (at === undefined || from === undefined ? "never" : seconds(Math.max(0, at - from)));
  /** `+b2: served 0.6 s, A reached it 2.1 s` (after `from`). */
  const describeFollowed = (c: Change, f: Followed, from: number): string =>
    `${c.kind === "gain" ? "+" : "-"}${nameOf(c.endpoint)}: served ${after(f.servedAt, from)}, A ${c.kind === "gain" ? `reached it ${after(f.followedAt, from)}` : `last sent to it ${after(f.followedAt, from)}${f.late === 0 ? "" : `, then ${f.late} more`}`}`;
  const healthy = (): boolean => mesh.proxies().every((p) => p.alive()) && mesh.destination.proc.alive() && mesh.destination.starts === 1;

  it("watches dropped mid-stream 3 times, the slice changed each time before the watch is back: 0 failed, every change followed", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    await sleep(500);
    const notes: string[] = [];
    let holds = true;
    for (let i = 0; i < 3; i++) {
      const before = sliceWatches();
      const dropped = mesh.api.dropWatches();
      // Applied in the same tick as the drop: no open watch sees it; the reopened one replays it from its resourceVersion.
      const change = nextChange();
      mesh.setEndpoints(change.to);
      const changedAt = Date.now();
      const back = await watchRequest(before);
      const f = await followed(traffic, change, changedAt);
      holds &&= dropped > 0 && back !== undefined && f.ok;
      notes.push(`${describeFollowed(change, f, changedAt)} (watch back ${after(back, changedAt)})`);
      await sleep(1000);
    }
    const summary = await traffic.stop();
    record({
      case: "Kubernetes watches dropped mid-stream 3×, slice changed meanwhile",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed; each change served once the watch returns (replayed from its resourceVersion) and followed by A",
      holds: holds && summary.failed === 0 && healthy(),
      note: `after each drop: ${notes.join("; ")}`,
    }, summary);
  });

  for (const goneAs of ["status", "event"] as const) {
    it(`history compacted, the reopened watch answered ${goneAs === "status" ? "410 Gone" : "with an in-stream ERROR 410"}: relisted, 0 failed, the change followed`, async () => {
      const rssBefore = rssOf(mesh.proxies());
      const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
      await sleep(500);
      const linesBefore = mesh.destination.proc.lines.length;
      const listsBefore = sliceLists();
      mesh.api.setGoneAs(goneAs);
      mesh.api.dropWatches();
      const change = nextChange();
      mesh.setEndpoints(change.to);
      // Everything up to now forgotten: a watch from any version before the change is 410.
      mesh.api.compact();
      const changedAt = Date.now();
      const f = await followed(traffic, change, changedAt);
      await sleep(500);
      const summary = await traffic.stop();
      const relisted = mesh.destination.proc.lines.slice(linesBefore).some((l) => l["resource"] === "endpointslices" && /410/.test(String(l.msg)));
      const lists = sliceLists() - listsBefore;
      record({
        case: `Kubernetes watch answered ${goneAs === "status" ? "410 Gone" : "ERROR 410 in-stream"}, slice changed meanwhile`,
        ...figures(summary),
        rssBeforeKiB: rssBefore,
        rssAfterKiB: rssOf(mesh.proxies()),
        expected: "0 failed; the destination relists, serves the change, A follows it",
        holds: summary.failed === 0 && relisted && lists >= 1 && f.ok && healthy(),
        note: `${relisted ? "'resourceVersion expired (410): relisting'" : "no 410 logged"}, ${lists} list(s); after the drop: ${describeFollowed(change, f, changedAt)}`,
      }, summary);
    });
  }

  it("EndpointSlice requests answered 500 for a few seconds after a drop: 0 failed, the change followed", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    await sleep(500);
    const before = sliceWatches();
    const failures = 3;
    mesh.api.failNext({ pathPrefix: SLICES, httpStatus: 500, count: failures, message: "etcdserver: request timed out" });
    mesh.api.dropWatches();
    const change = nextChange();
    mesh.setEndpoints(change.to);
    const changedAt = Date.now();
    const firstFailure = await watchRequest(before);
    const lastFailure = await watchRequest(before, failures);
    const back = await watchRequest(before, failures + 1);
    const f = await followed(traffic, change, changedAt);
    await sleep(500);
    const summary = await traffic.stop();
    // Nothing served while the watch was answered 500.
    const early = f.servedAt !== undefined && lastFailure !== undefined && f.servedAt < lastFailure;
    record({
      case: "Kubernetes EndpointSlice requests answered 500 for seconds, slice changed meanwhile",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed; retried with backoff, the change served once answered, A follows it",
      holds: summary.failed === 0 && back !== undefined && !early && f.ok && healthy(),
      note: `${failures} watch requests answered 500 over ${after(back, firstFailure)}; after the watch returned: ${describeFollowed(change, f, back ?? changedAt)}`,
    }, summary);
  });

  it("the API server gone 5 s (listener closed, connections reset), the slice changed meanwhile: 0 failed, converges", async () => {
    const rssBefore = rssOf(mesh.proxies());
    const traffic = startTraffic(() => requestVia(mesh.a.outbound, authorityB));
    await sleep(500);
    const linesBefore = mesh.destination.proc.lines.length;
    await mesh.gate.shut();
    const change = nextChange();
    mesh.setEndpoints(change.to);
    const changedAt = Date.now();
    await sleep(5000);
    const before = sliceWatches();
    await mesh.gate.open();
    const openedAt = Date.now();
    const back = await watchRequest(before);
    const f = await followed(traffic, change, changedAt);
    await sleep(500);
    const summary = await traffic.stop();
    const refused = mesh.destination.proc.lines.slice(linesBefore).filter((l) => l["code"] === "ERR_KUBE_API_UNREACHABLE").length;
    // The change really waited for the API server.
    const early = f.servedAt !== undefined && f.servedAt < openedAt;
    record({
      case: "Kubernetes API server gone 5 s, slice changed meanwhile",
      ...figures(summary),
      rssBeforeKiB: rssBefore,
      rssAfterKiB: rssOf(mesh.proxies()),
      expected: "0 failed; the destination keeps its endpoints, serves the change once the API server is back, A follows it",
      holds: summary.failed === 0 && refused > 0 && !early && back !== undefined && f.ok && healthy(),
      note: `${refused} failed list/watch attempts logged; after the API server returned: watch back ${after(back, openedAt)}, ${describeFollowed(change, f, openedAt)}`,
    }, summary);
  });
});
