import http2 from "node:http2";
import net from "node:net";
import { credentials, Metadata, Server, ServerCredentials, status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { IdentityClient } from "@meshtls/api";
import { createCsr, generateKeyPair } from "@meshtls/pki";
import { limitGrpcConnections } from "@meshtls/runtime";
import type { GrpcConnectionTimeouts } from "@meshtls/runtime";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { createJwksTokenValidator } from "./jwks-token-validator.ts";
import { createIdentityServer } from "./server.ts";
import { CERTIFY_LIMITS, resolveCertifyLimits } from "./server-limits.ts";
import type { CertifyLimits } from "./server-limits.ts";
import { createPkiFixture, createTokenSigner, TOKEN_ISSUER } from "./test-fixtures.ts";

const CERTIFY_PATH = "/io.linkerd.proxy.identity.Identity/Certify";

/** A Certify stream that sends its headers and never its request; resolves with the grpc-status it ends with. */
function idleCertify(session: http2.ClientHttp2Session): Promise<{ code: number; message: string; afterMs: number }> {
  const started = Date.now();
  const stream = session.request({ ":method": "POST", ":path": CERTIFY_PATH, "content-type": "application/grpc", te: "trailers" });
  return new Promise((resolve, reject) => {
    let code: number | undefined;
    let message = "";
    const read = (headers: http2.IncomingHttpHeaders) => {
      if (headers["grpc-status"] !== undefined) {
        code = Number(headers["grpc-status"]);
        message = decodeURIComponent(String(headers["grpc-message"] ?? ""));
      }
    };
    stream.on("response", read);
    stream.on("trailers", read);
    stream.on("error", reject);
    stream.resume();
    stream.on("close", () => (code === undefined ? reject(new Error(`stream closed without a status (rst ${stream.rstCode})`)) : resolve({ code, message, afterMs: Date.now() - started })));
  });
}

describe("Certify server limits", () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0).reverse()) c();
  });

  /** A server built as meshtls-identity builds it: the parts' options, and with `timeouts` the runtime's connection bounds. */
  async function start(limits: CertifyLimits, timeouts?: GrpcConnectionTimeouts) {
    const pki = await createPkiFixture();
    const signer = await createTokenSigner();
    const metricsRegistry = new Registry();
    const parts = createIdentityServer({ issuerStore: pki.source, tokenValidator: createJwksTokenValidator({ jwks: signer.jwks, issuer: TOKEN_ISSUER }), limits, metricsRegistry });
    const server = new Server(parts.serverOptions);
    if (timeouts !== undefined) limitGrpcConnections(server, { ...timeouts, metricsRegistry, listener: "identity" });
    server.addService(parts.service, parts.implementation);
    const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    cleanups.push(() => server.forceShutdown());
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => undefined);
    cleanups.push(() => session.destroy());
    await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
    return { parts, port, session, signer, metricsRegistry };
  }

  it("advertises its per-connection stream cap and ends a call that never sends its request at the deadline", async () => {
    const { parts, session, metricsRegistry } = await start({ maxConcurrentStreams: 7, certifyDeadlineMs: 300 });
    expect(session.remoteSettings.maxConcurrentStreams).toBe(7);
    const ended = await Promise.all(Array.from({ length: 5 }, () => idleCertify(session)));
    for (const e of ended) {
      expect(e.code).toBe(status.DEADLINE_EXCEEDED);
      expect(e.message).toMatch(/did not complete within the server's limit of 300 ms/);
      expect(e.afterMs).toBeGreaterThanOrEqual(250);
      expect(e.afterMs).toBeLessThan(5000);
    }
    expect(parts.calls()).toBe(0);
    expect(await metricsRegistry.getSingleMetricAsString("identity_certify_limited_total")).toMatch(/reason="deadline"} 5$/m);
  });

  it("refuses calls beyond the per-peer share and the total with RESOURCE_EXHAUSTED, and frees them as calls end", async () => {
    const { parts, session, port, signer } = await start({ maxCalls: 4, maxCallsPerPeer: 3, certifyDeadlineMs: 1500 });
    const held = Array.from({ length: 3 }, () => idleCertify(session));
    await expect.poll(() => parts.calls()).toBe(3);
    const refused = await idleCertify(session);
    expect([refused.code, refused.message]).toEqual([status.RESOURCE_EXHAUSTED, "this peer (127.0.0.1) holds its maximum of 3 Certify calls; retry later"]);
    // Another peer gets the last call of the total, then is refused by the total.
    const other = http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" }) });
    other.on("error", () => undefined);
    cleanups.push(() => other.destroy());
    held.push(idleCertify(other));
    await expect.poll(() => parts.calls()).toBe(4);
    const full = await idleCertify(other);
    expect([full.code, full.message]).toEqual([status.RESOURCE_EXHAUSTED, "the identity service holds its maximum of 4 Certify calls; retry later"]);
    for (const h of await Promise.all(held)) expect(h.code).toBe(status.DEADLINE_EXCEEDED);
    expect(parts.calls()).toBe(0);
    // Freed: a complete call is served.
    const client = new IdentityClient(`127.0.0.1:${port}`, credentials.createInsecure());
    cleanups.push(() => client.close());
    const identity = "web.default.serviceaccount.identity.meshtls.cluster.local";
    const csr = await createCsr({ keyPair: await generateKeyPair(), identity });
    const token = Buffer.from(await signer.mint("default", "web"));
    const answer = await new Promise<ServiceError | null>((resolve) =>
      client.certify({ identity, token, certificateSigningRequest: Buffer.from(csr) }, new Metadata(), { deadline: Date.now() + 10_000 }, (e) => resolve(e)),
    );
    expect(answer).toBeNull();
  });

  it("cuts a client trickling a Certify's HEADERS after the handshake at its first unanswered PING, counted; a real client is not", async () => {
    const { port, session, metricsRegistry } = await start({ certifyDeadlineMs: 300 }, { pingIntervalMs: 300, pingTimeoutMs: 300 });
    // A HEADERS frame announcing 200 bytes (a literal field whose value announces 100), sent a byte every 100 ms.
    const payload = Buffer.concat([Buffer.from([0x00, 0x01, 0x78, 0x64]), Buffer.alloc(196, 0x61)]);
    const head = Buffer.from([0, 0, payload.length, 0x1, 0x4, 0, 0, 0, 1]);
    const started = Date.now();
    const raw = net.connect(port, "127.0.0.1", () => raw.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]), head])));
    let sent = 0;
    const trickle = setInterval(() => raw.write(payload.subarray(sent, ++sent)), 100);
    cleanups.push(() => {
      clearInterval(trickle);
      raw.destroy();
    });
    raw.on("data", () => undefined);
    raw.on("error", () => undefined);
    const closedAfterMs = await new Promise<number>((resolve) => raw.once("close", () => resolve(Date.now() - started)));
    expect(closedAfterMs).toBeGreaterThanOrEqual(550);
    expect(closedAfterMs).toBeLessThan(5000);
    expect(sent).toBeLessThan(payload.length);
    expect(await metricsRegistry.getSingleMetricAsString("grpc_connections_closed_total")).toMatch(/listener="identity",reason="ping_timeout"} 1$/m);
    // The real client connected before it answered every PING meanwhile: its session is still up and serves a call.
    expect(session.closed || session.destroyed).toBe(false);
    expect((await idleCertify(session)).code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("refuses limits that are not whole numbers ≥ 1, or a per-peer share above the total", () => {
    expect(resolveCertifyLimits(undefined)).toEqual(CERTIFY_LIMITS);
    expect(() => resolveCertifyLimits({ certifyDeadlineMs: 0 })).toThrow(/limits\.certifyDeadlineMs must be a whole number/);
    expect(() => resolveCertifyLimits({ maxCalls: 10, maxCallsPerPeer: 11 })).toThrow(/must not exceed limits\.maxCalls/);
  });
});
