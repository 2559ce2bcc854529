import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { startFakeApiServer, type FakeApiServer, type KubeObject } from "./fake-api-server.ts";

const pod = (name: string, labels: Record<string, string> = {}): KubeObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: "shop", labels },
  spec: { containers: [] },
});

/** Reads a watch's NDJSON lines until `count` arrived or the server ended the response. */
function watchLines(url: string, count: number): Promise<{ status: number; lines: Record<string, unknown>[]; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const lines: Record<string, unknown>[] = [];
    request(url, (response) => {
      let buffer = "";
      const finish = (ended: boolean): void => {
        response.destroy();
        resolve({ status: response.statusCode ?? 0, lines, ended });
      };
      response.on("data", (chunk: Buffer) => {
        buffer += chunk.toString("utf8");
        let i: number;
        while ((i = buffer.indexOf("\n")) >= 0) {
          lines.push(JSON.parse(buffer.slice(0, i)) as Record<string, unknown>);
          buffer = buffer.slice(i + 1);
          if (lines.length >= count) finish(false);
        }
      });
      response.on("end", () => finish(true));
    })
      .on("error", reject)
      .end();
  });
}

describe("fake API server", () => {
  let api: FakeApiServer;
  afterEach(async () => api?.close());

  it("lists with a resourceVersion and watches from it, replaying retained history", async () => {
    api = await startFakeApiServer();
    api.apply(pod("a", { app: "web" }));
    api.apply(pod("b", { app: "db" }));
    const list = (await (await fetch(`${api.url}/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb`)).json()) as { kind: string; metadata: { resourceVersion: string }; items: KubeObject[] };
    expect(list.kind).toBe("PodList");
    expect(list.items.map((p) => p.metadata.name)).toEqual(["a"]);
    const from = list.metadata.resourceVersion;
    api.apply(pod("c", { app: "web" }));
    api.apply(pod("a", { app: "web", v: "2" }));
    api.remove("Pod", "shop", "c");
    const watched = await watchLines(`${api.url}/api/v1/namespaces/shop/pods?watch=true&resourceVersion=${from}&labelSelector=app%3Dweb`, 3);
    expect(watched.status).toBe(200);
    expect(watched.lines.map((l) => `${l.type as string}:${(l.object as KubeObject).metadata.name}`)).toEqual(["ADDED:c", "MODIFIED:a", "DELETED:c"]);
  });

  it("answers an expired version with an in-stream 410 ERROR, or HTTP 410 when so configured", async () => {
    api = await startFakeApiServer();
    api.apply(pod("a"));
    const old = api.resourceVersion();
    api.apply(pod("b"));
    api.compact();
    const inStream = await watchLines(`${api.url}/api/v1/pods?watch=true&resourceVersion=${Number(old) - 1}`, 5);
    expect(inStream.status).toBe(200);
    expect(inStream.ended).toBe(true);
    expect(inStream.lines).toEqual([{ type: "ERROR", object: expect.objectContaining({ kind: "Status", code: 410, reason: "Expired" }) }]);
    await api.close();
    api = await startFakeApiServer({ goneAs: "status" });
    api.apply(pod("a"));
    api.compact();
    const response = await fetch(`${api.url}/api/v1/pods?watch=true&resourceVersion=1`);
    expect(response.status).toBe(410);
    expect(await response.json()).toMatchObject({ kind: "Status", status: "Failure", reason: "Expired", code: 410 });
  });

  it("sends bookmarks when asked, closes after timeoutSeconds, and drops connections on demand", async () => {
    api = await startFakeApiServer({ bookmarkIntervalMs: 100 });
    const rv = api.resourceVersion();
    const bookmarks = await watchLines(`${api.url}/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`, 2);
    expect(bookmarks.lines[0]).toEqual({ type: "BOOKMARK", object: { kind: "EndpointSlice", apiVersion: "discovery.k8s.io/v1", metadata: { resourceVersion: rv } } });
    const started = Date.now();
    const timedOut = await watchLines(`${api.url}/api/v1/pods?watch=true&resourceVersion=${rv}&timeoutSeconds=1`, 1);
    expect(timedOut.ended).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const dropped = new Promise<string>((resolve) => {
      request(`${api.url}/api/v1/pods?watch=true&resourceVersion=${rv}`, (response) => {
        response.on("error", () => resolve("error"));
        response.on("aborted", () => resolve("aborted"));
        response.on("end", () => resolve("end"));
        response.resume();
      })
        .on("error", () => resolve("error"))
        .end();
    });
    await expect.poll(() => api.openWatches()).toBe(1);
    expect(api.dropWatches()).toBe(1);
    expect(["aborted", "error"]).toContain(await dropped);
  });

  it("reviews tokens as the API server does and answers errors with Status bodies", async () => {
    api = await startFakeApiServer({ bearerToken: "sekret", tokens: { t1: { username: "system:serviceaccount:shop:web", audiences: ["identity.l5d.io"] } } });
    const post = (path: string, body: unknown, token = "sekret") =>
      fetch(`${api.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    const review = (token: string, audiences: string[]) =>
      post("/apis/authentication.k8s.io/v1/tokenreviews", { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token, audiences } });
    const ok = await review("t1", ["identity.l5d.io"]);
    expect(ok.status).toBe(201);
    expect(await ok.json()).toMatchObject({ status: { authenticated: true, user: { username: "system:serviceaccount:shop:web" }, audiences: ["identity.l5d.io"] } });
    const wrong = (await (await review("t1", ["other"])).json()) as { status: { error: string; authenticated?: boolean } };
    expect(wrong.status.authenticated).toBeUndefined();
    expect(wrong.status.error).toContain("token audiences");
    expect((await post("/apis/authentication.k8s.io/v1/tokenreviews", {}, "nope")).status).toBe(401);
    expect((await post("/apis/authentication.k8s.io/v1/tokenreviews", { kind: "Nope" })).status).toBe(400);
    api.failNext({ pathPrefix: "/apis/authentication.k8s.io", httpStatus: 503 });
    const failed = await review("t1", ["identity.l5d.io"]);
    expect(failed.status).toBe(503);
    expect(await failed.json()).toMatchObject({ kind: "Status", code: 503, reason: "ServiceUnavailable" });
    api.setAccess((a) => a.resource !== "tokenreviews");
    const access = await post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
      apiVersion: "authorization.k8s.io/v1",
      kind: "SelfSubjectAccessReview",
      spec: { resourceAttributes: { group: "authentication.k8s.io", resource: "tokenreviews", verb: "create" } },
    });
    expect(await access.json()).toMatchObject({ status: { allowed: false } });
    const unknown = await fetch(`${api.url}/api/v1/pods?bogus=1`, { headers: { authorization: "Bearer sekret" } });
    expect(unknown.status).toBe(400);
    expect(api.requests().at(-1)).toMatchObject({ method: "GET", path: "/api/v1/pods", query: { bogus: "1" } });
  });
});
