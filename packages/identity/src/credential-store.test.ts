import { describe, expect, it } from "vitest";
import { createCredentialStore } from "./credential-store.ts";
import type { Credentials } from "./credential-store.ts";

function fake(notAfter: Date, identity = "web.default.serviceaccount.identity.meshtls.cluster.local"): Credentials {
  // The store treats credentials as opaque apart from notAfter.
  return { identity, notAfter, leaf: new Uint8Array([1]), intermediates: [], certificateChainPem: "", privateKeyPem: "", keyPair: {} as Credentials["keyPair"] };
}

describe("createCredentialStore", () => {
  it("is empty until set, then publishes to subscribers", () => {
    let clock = new Date("2026-01-01T00:00:00Z");
    const store = createCredentialStore({ now: () => clock });
    expect(store.current()).toBeUndefined();
    const seen: Credentials[] = [];
    const unsubscribe = store.subscribe((c) => seen.push(c));
    const first = fake(new Date("2026-01-01T01:00:00Z"));
    store.set(first);
    expect(store.current()).toBe(first);
    unsubscribe();
    store.set(fake(new Date("2026-01-01T02:00:00Z")));
    expect(seen).toEqual([first]);
    clock = new Date("2026-01-01T02:00:00Z");
    expect(store.current()).toBeUndefined();
  });

  it("keeps notifying when a subscriber throws", () => {
    const store = createCredentialStore();
    let called = 0;
    store.subscribe(() => {
      throw new Error("boom");
    });
    store.subscribe(() => {
      called += 1;
    });
    store.set(fake(new Date(Date.now() + 60_000)));
    expect(called).toBe(1);
  });
});
