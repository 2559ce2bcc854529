import { EventEmitter } from "node:events";
import { IPNetwork, ipToIpAddress } from "@meshtls/api";
import type { InboundServer } from "@meshtls/api";
import { afterEach, describe, expect, it } from "vitest";
import { defaultServerPolicy } from "./policy.js";
import { serverPolicyFromProto } from "./policy-proto.js";
import type { PolicyWatcher, PolicyWatchStream } from "./policy-watcher.js";
import { createPolicyWatcher } from "./policy-watcher.js";

const WORKLOAD = JSON.stringify({ ns: "default", pod: "b-1" });
const A = "a.default.serviceaccount.identity.meshtls.cluster.local";

/** A WatchPort stream the test drives. */
class FakeStream extends EventEmitter implements PolicyWatchStream {
  cancelled = false;
  constructor(readonly port: number) {
    super();
  }
  cancel(): void {
    this.cancelled = true;
    this.emit("error", Object.assign(new Error("cancelled"), { code: 1 }));
  }
}

const all = [IPNetwork.fromPartial({ ip: ipToIpAddress("0.0.0.0"), prefixLen: 0 }), IPNetwork.fromPartial({ ip: ipToIpAddress("::"), prefixLen: 0 })];
/** A Server message as the controller sends it for a Server resource admitting only A. */
const onlyA: InboundServer = {
  protocol: { kind: { $case: "detect", value: { timeout: { seconds: 10n, nanos: 0 }, httpRoutes: [], httpLocalRateLimit: undefined } } },
  serverIps: [],
  labels: { group: "policy.linkerd.io", kind: "server", name: "b-http" },
  authorizations: [
    {
      networks: all.map((net) => ({ net, except: [] })),
      authentication: { permit: { $case: "meshTLS", value: { clients: { $case: "identities", value: { identities: [{ name: A }], suffixes: [{ parts: ["other", "svc"] }] } } } } },
      labels: {},
      metadata: { kind: { $case: "resource", value: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "b-from-a", namespace: "default", section: "", port: 0 } } },
    },
  ],
};

describe("serverPolicyFromProto", () => {
  it("converts protocol, networks, identities and suffixes, server labels and authz metadata", () => {
    expect(serverPolicyFromProto(onlyA)).toEqual({
      protocol: { kind: "detect", timeoutMs: 10_000 },
      meta: { group: "policy.linkerd.io", kind: "server", name: "b-http" },
      authorizations: [
        {
          networks: [{ net: "0.0.0.0/0", except: [] }, { net: "::/0", except: [] }],
          authentication: { kind: "mesh-tls", identities: [A], suffixes: ["other.svc"] },
          meta: { group: "policy.linkerd.io", kind: "authorizationpolicy", name: "b-from-a" },
        },
      ],
    });
  });

  it("drops authorizations without networks; refuses a server without protocol with a coded error", () => {
    expect(serverPolicyFromProto({ ...onlyA, authorizations: [{ ...onlyA.authorizations[0]!, networks: [] }] }).authorizations).toEqual([]);
    expect(() => serverPolicyFromProto({ ...onlyA, protocol: undefined })).toThrow(expect.objectContaining({ code: "ERR_POLICY_INVALID" }));
  });
});

describe("createPolicyWatcher", () => {
  let watcher: PolicyWatcher | undefined;
  afterEach(() => watcher?.close());

  function start(options: { ports: number[]; idleTimeoutMs?: number }) {
    const streams: FakeStream[] = [];
    watcher = createPolicyWatcher({
      workload: WORKLOAD,
      defaults: () => defaultServerPolicy("all-unauthenticated"),
      watchPort: ({ workload, port }) => {
        expect(workload).toBe(WORKLOAD);
        const stream = new FakeStream(port);
        streams.push(stream);
        return stream;
      },
      minBackoffMs: 20,
      maxBackoffMs: 80,
      random: () => 1,
      ...options,
    });
    return { watcher, streams };
  }

  it("watches declared ports from the start; the default until the first answer; each update at once, subscribers told", () => {
    const { watcher, streams } = start({ ports: [8080] });
    expect(streams.map((s) => s.port)).toEqual([8080]);
    const heard: string[] = [];
    watcher.subscribe((port, policy) => heard.push(`${port}:${policy.meta.name}`));
    expect(watcher.current(8080).meta.name).toBe("all-unauthenticated");
    streams[0]!.emit("data", onlyA);
    expect(watcher.current(8080).meta.name).toBe("b-http");
    expect(heard).toEqual(["8080:b-http"]);
  });

  it("an unusable server admits nobody; a failed stream is reopened with backoff keeping the last policy; InvalidArgument is not retried", async () => {
    const { watcher, streams } = start({ ports: [8080, 9090] });
    streams[0]!.emit("data", { ...onlyA, protocol: undefined });
    expect(watcher.current(8080)).toMatchObject({ authorizations: [], meta: { kind: "invalid" } });
    streams[0]!.emit("data", onlyA);
    streams[0]!.emit("error", Object.assign(new Error("unavailable"), { code: 14 }));
    expect(watcher.current(8080).meta.name).toBe("b-http");
    await new Promise((r) => setTimeout(r, 60));
    expect(streams.filter((s) => s.port === 8080)).toHaveLength(2);
    streams[1]!.emit("error", Object.assign(new Error("bad port"), { code: 3 }));
    await new Promise((r) => setTimeout(r, 200));
    expect(streams.filter((s) => s.port === 9090)).toHaveLength(1);
  });

  it("other ports are watched from their first use and dropped once idle, not while a connection is open on them", async () => {
    const { watcher, streams } = start({ ports: [8080], idleTimeoutMs: 1000 });
    expect(watcher.current(7000).meta.name).toBe("all-unauthenticated");
    const release = watcher.retain?.(7001);
    expect(watcher.watched().sort()).toEqual([7000, 7001, 8080]);
    await new Promise((r) => setTimeout(r, 2600));
    // 7001 has an open connection: still followed; once it closes, dropped like 7000.
    expect(watcher.watched().sort()).toEqual([7001, 8080]);
    release?.();
    await new Promise((r) => setTimeout(r, 2600));
    expect(watcher.watched()).toEqual([8080]);
    expect(streams.find((s) => s.port === 7000)?.cancelled).toBe(true);
    watcher.close();
    expect(streams.find((s) => s.port === 8080)?.cancelled).toBe(true);
  });
});
