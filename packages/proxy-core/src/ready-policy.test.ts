// `/ready` waits for the policy controller's first answer for each declared
// inbound port, as linkerd2-proxy does: a proxy that would still serve its
// ports with the default policy stays out of rotation until then.
import { EventEmitter } from "node:events";
import type { InboundServer } from "@meshtls/api";
import { afterEach, describe, expect, it } from "vitest";
import { defaultServerPolicy } from "./policy.js";
import type { PolicyWatchStream } from "./policy-watcher.js";
import { createPolicyWatcher } from "./policy-watcher.js";
import { createProxy } from "./proxy.js";
import type { Proxy } from "./proxy.js";
import { createBundle, createStore, createTableResolver, createTestMesh, identityOf } from "./test-mesh.js";

const lo = { host: "127.0.0.1", port: 0 };

/** A WatchPort stream the test answers on. */
class FakeStream extends EventEmitter implements PolicyWatchStream {
  cancel(): void {
    this.emit("error", Object.assign(new Error("cancelled"), { code: 1 }));
  }
}

const server: InboundServer = {
  protocol: { kind: { $case: "detect", value: { timeout: { seconds: 10n, nanos: 0 }, httpRoutes: [], httpLocalRateLimit: undefined } } },
  serverIps: [],
  labels: { group: "policy.linkerd.io", kind: "server", name: "b-http" },
  authorizations: [],
};

describe("/ready and the policy controller", () => {
  const proxies: Proxy[] = [];
  afterEach(async () => {
    await Promise.all(proxies.splice(0).map((p) => p.stop({ drainMs: 0 })));
  });

  it("is 503 until the controller answered for every declared port, then 200", async () => {
    const mesh = await createTestMesh();
    const streams = new Map<number, FakeStream>();
    const policy = createPolicyWatcher({
      workload: JSON.stringify({ ns: "default", pod: "b-0" }),
      ports: [8080, 9090],
      defaults: () => defaultServerPolicy("all-unauthenticated"),
      watchPort: ({ port }) => {
        const stream = new FakeStream();
        streams.set(port, stream);
        return stream;
      },
    });
    const identity = identityOf("b");
    const proxy = createProxy({ identity, credentials: createStore(await mesh.issue(identity)), trustBundle: createBundle([mesh.anchor.certificate]), resolver: createTableResolver(new Map()), policy, inbound: { listen: lo, workload: { host: "127.0.0.1", port: 8080 } }, outbound: { listen: lo }, admin: { listen: lo } });
    proxies.push(proxy);
    const ready = `http://127.0.0.1:${(await proxy.start()).admin.port}/ready`;

    const before = await fetch(ready);
    expect(before.status).toBe(503);
    expect(await before.text()).toContain("no policy from the controller yet for port 8080, 9090");
    streams.get(8080)?.emit("data", server);
    const half = await fetch(ready);
    expect(half.status).toBe(503);
    expect(await half.text()).toContain("port 9090");
    streams.get(9090)?.emit("data", server);
    expect((await fetch(ready)).status).toBe(200);
    // A lost watch keeps the last policy: still ready.
    streams.get(9090)?.emit("error", Object.assign(new Error("unavailable"), { code: 14 }));
    expect((await fetch(ready)).status).toBe(200);
  });

  it("a static policy source is ready with the certificate alone", async () => {
    const mesh = await createTestMesh();
    const identity = identityOf("c");
    const proxy = createProxy({ identity, credentials: createStore(await mesh.issue(identity)), trustBundle: createBundle([mesh.anchor.certificate]), resolver: createTableResolver(new Map()), inbound: { listen: lo, workload: { host: "127.0.0.1", port: 8080 } }, outbound: { listen: lo }, admin: { listen: lo } });
    proxies.push(proxy);
    expect((await fetch(`http://127.0.0.1:${(await proxy.start()).admin.port}/ready`)).status).toBe(200);
  });
});
