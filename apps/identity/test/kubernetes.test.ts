import { spawn, type ChildProcess } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import type { IdentityClient } from "@meshtls/api";
import { fakeApiKubeconfig, startFakeApiServer, type FakeApiServer } from "@meshtls/kubernetes/testing";
import { parseCertificate } from "@meshtls/pki";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { certify, createMaterial, identityBin, identityClient, identityFor, opensslCsr, tempDir } from "./harness.ts";

interface Started {
  child: ChildProcess;
  grpcAddress: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts the built meshtls-identity with `--source kubernetes`; resolves at its "listening" line or its exit. */
function startKubernetesIdentity(dir: string, kubeconfigFile: string, extra: string[] = []): Promise<Started & { listening: boolean }> {
  const args = [
    identityBin,
    "--source",
    "kubernetes",
    "--kubeconfig",
    kubeconfigFile,
    "--trust-anchors",
    path.join(dir, "ca.crt"),
    "--issuer-dir",
    dir,
    "--listen",
    "127.0.0.1:0",
    "--admin",
    "127.0.0.1:0",
    ...extra,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env["PATH"] ?? "", HOME: dir } });
  let stderr = "";
  let buffered = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meshtls-identity did not start: ${stderr}`)), 20_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      for (const line of buffered.split("\n").slice(0, -1)) {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        if (parsed["msg"] === "listening") {
          clearTimeout(timer);
          resolve({ child, grpcAddress: String(parsed["grpc"]), stderr: () => stderr, exited, listening: true });
        }
      }
      buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
    });
    void exited.then(() => {
      clearTimeout(timer);
      resolve({ child, grpcAddress: "", stderr: () => stderr, exited, listening: false });
    });
  });
}

describe("meshtls-identity --source kubernetes (TokenReview against a loopback fake API server)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let api: FakeApiServer;
  let proc: Started;
  let client: IdentityClient;
  let csr: Buffer;
  const identity = identityFor("web", "shop");

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir("kube-identity"));
    await createMaterial(dir);
    api = await startFakeApiServer({
      bearerToken: "identity-sa-token",
      tokens: {
        "web-token": { username: "system:serviceaccount:shop:web", audiences: ["identity.l5d.io"] },
        "api-audience-token": { username: "system:serviceaccount:shop:web", audiences: ["https://kubernetes.default.svc.cluster.local"] },
        "user-token": { username: "alice", audiences: ["identity.l5d.io"] },
      },
    });
    await writeFile(path.join(dir, "kubeconfig"), fakeApiKubeconfig(api.url, "identity-sa-token"));
    proc = await startKubernetesIdentity(dir, path.join(dir, "kubeconfig"));
    client = await identityClient(dir, proc.grpcAddress);
    csr = (await opensslCsr(dir, { cn: identity, san: `DNS:${identity}` })).der;
  });
  afterAll(async () => {
    client?.close();
    proc?.child.kill("SIGTERM");
    await proc?.exited;
    await api?.close();
    await cleanup?.();
  });

  const request = (token: string) => ({ identity, token: Buffer.from(`${token}\n`), certificateSigningRequest: csr });
  async function refusal(token: string): Promise<{ code: number; details: string; errorCode: string }> {
    const error = (await certify(client, request(token)).catch((e: unknown) => e)) as ServiceError;
    expect(error.code, error.details).toBeTypeOf("number");
    return { code: error.code, details: error.details, errorCode: String(error.metadata.get("meshtls-error-code")[0]) };
  }

  it("checked its access at start and issues a certificate for a token the API server reviews", async () => {
    const access = api.requests().find((r) => r.path === "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews");
    expect(access?.body).toMatchObject({ spec: { resourceAttributes: { group: "authentication.k8s.io", resource: "tokenreviews", verb: "create" } } });
    const response = await certify(client, request("web-token"));
    const leaf = parseCertificate(response.leafCertificate);
    expect(leaf.san.dns).toEqual([identity]);
    const review = api.requests().findLast((r) => r.path === "/apis/authentication.k8s.io/v1/tokenreviews")!;
    expect(review.headers["authorization"]).toBe("Bearer identity-sa-token");
    expect(review.body).toEqual({ apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token: "web-token", audiences: ["identity.l5d.io"] } });
  });

  it("refuses a wrong audience, a non-ServiceAccount user, status.error and API failures with the mapped codes", async () => {
    expect(await refusal("api-audience-token")).toMatchObject({ code: status.UNAUTHENTICATED, errorCode: "ERR_TOKEN_AUDIENCE", details: expect.stringContaining("token audiences") });
    expect(await refusal("user-token")).toMatchObject({ code: status.UNAUTHENTICATED, errorCode: "ERR_TOKEN_CLAIMS", details: expect.stringContaining("alice") });
    expect(await refusal("forged-token")).toMatchObject({ code: status.UNAUTHENTICATED, errorCode: "ERR_TOKEN_REJECTED", details: expect.stringContaining("invalid bearer token") });
    api.onTokenReview(() => ({ status: { user: {}, error: "[invalid bearer token, service account token has expired]" } }));
    expect(await refusal("web-token")).toMatchObject({ code: status.UNAUTHENTICATED, errorCode: "ERR_TOKEN_REJECTED", details: expect.stringContaining("has expired") });
    api.onTokenReview(() => ({ status: { authenticated: true, user: { username: "system:serviceaccount:shop:web" } } }));
    expect(await refusal("web-token")).toMatchObject({ code: status.UNAUTHENTICATED, errorCode: "ERR_TOKEN_AUDIENCE", details: expect.stringContaining("audience-aware") });
    api.onTokenReview(() => ({ httpStatus: 500, message: "etcdserver: request timed out" }));
    expect(await refusal("web-token")).toMatchObject({ code: status.UNAVAILABLE, errorCode: "ERR_TOKEN_UNAVAILABLE", details: expect.stringContaining("etcdserver") });
    api.onTokenReview(undefined);
    api.failNext({ pathPrefix: "/apis/authentication.k8s.io/", httpStatus: 403, message: 'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:meshtls:identity" cannot create' });
    expect(await refusal("web-token")).toMatchObject({ code: status.UNAVAILABLE, errorCode: "ERR_TOKEN_UNAVAILABLE", details: expect.stringContaining("forbidden") });
    // Still serving: the next good token is certified.
    await expect(certify(client, request("web-token"))).resolves.toMatchObject({ leafCertificate: expect.any(Uint8Array) });
  });

  it("refuses to start without permission to create TokenReviews, saying so", async () => {
    api.setAccess(() => false);
    try {
      const denied = await startKubernetesIdentity(dir, path.join(dir, "kubeconfig"));
      expect(denied.listening).toBe(false);
      expect(await denied.exited).toBe(1);
      expect(denied.stderr()).toContain("may not create authentication.k8s.io/tokenreviews");
    } finally {
      api.setAccess(() => true);
    }
    await writeFile(path.join(dir, "kubeconfig-wrong"), fakeApiKubeconfig(api.url, "not-the-token"));
    const unauthorized = await startKubernetesIdentity(dir, path.join(dir, "kubeconfig-wrong"));
    expect(unauthorized.listening).toBe(false);
    expect(unauthorized.stderr()).toMatch(/--source kubernetes: .*HTTP 401/);
  });
});
