// Clients that go away mid-request or never start TLS must not take the webhook down or hold its sockets.
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { podFromVector, reviewOf, servingCertDir, startInjector, type Injector } from "./harness.ts";

let cert: ReturnType<typeof servingCertDir>;
let injector: Injector;

beforeAll(async () => {
  cert = servingCertDir();
  injector = await startInjector(cert, ["--no-namespace-lookup"]);
}, 60_000);

afterAll(() => {
  injector?.stop();
  cert?.remove();
});

/** Sends `head` over TLS, then hangs up; resolves once the socket is closed. */
function sendAndHangUp(head: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port: injector.port, ca: cert.ca, servername: "localhost" }, () => {
      socket.write(head);
      setTimeout(() => socket.destroy(), 200);
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve());
  });
}

describe("meshtls-injector and clients that misbehave", () => {
  it("survives a client that hangs up mid-body and one whose chunked body is malformed, and keeps serving", async () => {
    await sendAndHangUp("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\":");
    await sendAndHangUp("POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(injector.child.exitCode).toBeNull();
    expect((await injector.post(JSON.stringify(reviewOf(podFromVector(), "after-abort")))).status).toBe(200);
  });

  it("closes a connection that never starts its TLS handshake within the 10 s handshake timeout", async () => {
    const started = Date.now();
    const closedAfterMs = await new Promise<number>((resolve) => {
      const socket = net.connect(injector.port, "127.0.0.1");
      socket.on("error", () => undefined);
      socket.on("close", () => resolve(Date.now() - started));
    });
    expect(closedAfterMs).toBeGreaterThan(5_000);
    expect(closedAfterMs).toBeLessThan(20_000);
  }, 30_000);
});
