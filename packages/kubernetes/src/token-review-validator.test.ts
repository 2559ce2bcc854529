import { IdentityError } from "@meshtls/identity";
import { afterEach, describe, expect, it } from "vitest";
import { createKubeApi } from "./api-client.ts";
import { KubernetesError } from "./errors.ts";
import { startFakeApiServer, type FakeApiServer } from "./testing/fake-api-server.ts";
import { checkAccess, createTokenReviewValidator } from "./token-review-validator.ts";

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

async function refusal(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(IdentityError);
  return { code: (error as IdentityError).code, message: (error as IdentityError).message };
}

describe("TokenReview validator", () => {
  let api: FakeApiServer;
  afterEach(async () => api?.close());

  async function start(): Promise<ReturnType<typeof createKubeApi>> {
    api = await startFakeApiServer({
      bearerToken: "identity-sa-token",
      tokens: {
        good: { username: "system:serviceaccount:shop:web", audiences: ["identity.l5d.io"] },
        legacy: { username: "system:serviceaccount:shop:old", audiences: ["https://kubernetes.default.svc.cluster.local"] },
        user: { username: "alice", audiences: ["identity.l5d.io"] },
        badns: { username: "system:serviceaccount:Shop:web", audiences: ["identity.l5d.io"] },
      },
    });
    return createKubeApi({
      server: api.url,
      prepare: async (o) => {
        o.headers = { ...o.headers, authorization: "Bearer identity-sa-token" };
      },
    });
  }

  it("accepts a ServiceAccount token for identity.l5d.io and sends what Linkerd sends", async () => {
    const validator = createTokenReviewValidator({ api: await start() });
    await expect(validator.validate(bytes("good\n"))).resolves.toEqual({ namespace: "shop", serviceAccount: "web", subject: "system:serviceaccount:shop:web" });
    const sent = api.requests().at(-1)!;
    expect(sent).toMatchObject({ method: "POST", path: "/apis/authentication.k8s.io/v1/tokenreviews" });
    expect(sent.body).toEqual({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token: "good", audiences: ["identity.l5d.io"] } });
  });

  it("refuses each failure with its code", async () => {
    const validator = createTokenReviewValidator({ api: await start() });
    expect(await refusal(validator.validate(bytes("legacy")))).toMatchObject({ code: "ERR_TOKEN_AUDIENCE", message: expect.stringContaining("token audiences") });
    expect(await refusal(validator.validate(bytes("nope")))).toMatchObject({ code: "ERR_TOKEN_REJECTED", message: expect.stringContaining("invalid bearer token") });
    expect(await refusal(validator.validate(bytes("user")))).toMatchObject({ code: "ERR_TOKEN_CLAIMS" });
    expect(await refusal(validator.validate(bytes("badns")))).toMatchObject({ code: "ERR_TOKEN_CLAIMS" });
    expect(await refusal(validator.validate(new Uint8Array([0xff, 0xfe])))).toMatchObject({ code: "ERR_TOKEN_MALFORMED" });
    api.onTokenReview(() => ({ status: { user: {} } }));
    expect(await refusal(validator.validate(bytes("good")))).toMatchObject({ code: "ERR_TOKEN_REJECTED", message: expect.stringContaining("did not authenticate") });
    // An API server that is not audience-aware authenticates without saying for which audience.
    api.onTokenReview(() => ({ status: { authenticated: true, user: { username: "system:serviceaccount:shop:web" } } }));
    expect(await refusal(validator.validate(bytes("good")))).toMatchObject({ code: "ERR_TOKEN_AUDIENCE", message: expect.stringContaining("audience-aware") });
    api.onTokenReview(() => ({ httpStatus: 500, message: "etcd is down" }));
    expect(await refusal(validator.validate(bytes("good")))).toMatchObject({ code: "ERR_TOKEN_UNAVAILABLE", message: expect.stringContaining("etcd is down") });
    api.onTokenReview(undefined);
    api.failNext({ pathPrefix: "/apis/authentication.k8s.io", httpStatus: 403, message: "tokenreviews.authentication.k8s.io is forbidden" });
    expect(await refusal(validator.validate(bytes("good")))).toMatchObject({ code: "ERR_TOKEN_UNAVAILABLE", message: expect.stringContaining("forbidden") });
    const url = api.url;
    await api.close();
    const gone = createTokenReviewValidator({ api: createKubeApi({ server: url }) });
    expect(await refusal(gone.validate(bytes("good")))).toMatchObject({ code: "ERR_TOKEN_UNAVAILABLE", message: expect.stringContaining("cannot reach") });
    api = await startFakeApiServer();
  });

  it("accepts a legacy token only when allowed, after a review without audiences", async () => {
    const validator = createTokenReviewValidator({ api: await start(), allowLegacyTokens: true });
    await expect(validator.validate(bytes("legacy"))).resolves.toMatchObject({ namespace: "shop", serviceAccount: "old" });
    expect(api.requests().slice(-2).map((r) => (r.body as { spec: { audiences: string[] } }).spec.audiences)).toEqual([["identity.l5d.io"], []]);
  });

  it("checks access with a SelfSubjectAccessReview", async () => {
    const kube = await start();
    await expect(checkAccess(kube, { group: "authentication.k8s.io", version: "v1", resource: "tokenreviews", verb: "create" })).resolves.toBeUndefined();
    api.setAccess(() => false);
    const error = await checkAccess(kube, { group: "authentication.k8s.io", resource: "tokenreviews", verb: "create" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KubernetesError);
    expect(error).toMatchObject({ code: "ERR_KUBE_ACCESS_DENIED", message: expect.stringContaining("create authentication.k8s.io/tokenreviews") });
  });
});
