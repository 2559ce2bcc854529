import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkProxyAdmin } from "../src/commands/check-running.ts";
import { CliError } from "../src/errors.ts";
import { getAdmin, MAX_ADMIN_RESPONSE_BYTES } from "../src/mesh/admin-client.ts";

// A hostile or broken admin port on loopback: every way it can misbehave ends in a coded error, in bounded time.
describe("admin client against a misbehaving admin server", () => {
  let server: http.Server;
  let address: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/huge") {
        const chunk = Buffer.alloc(64 * 1024, "a");
        const write = (): void => {
          while (res.write(chunk)) {
            if (res.writableLength > MAX_ADMIN_RESPONSE_BYTES * 2) return;
          }
          res.once("drain", write);
        };
        write();
      } else if (req.url === "/slow") {
        res.write("partial");
        // Never ends: the client's bound must.
      } else if (req.url === "/ready") {
        res.end("ready\n");
      } else if (req.url === "/metrics") {
        res.end('identity_cert_expiration_timestamp_seconds{broken="} 1\n');
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  it("an answer larger than 4 MiB is refused", async () => {
    const error = await getAdmin({ address, path: "/huge" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).code).toBe("ERR_CONNECT");
    expect((error as CliError).message).toMatch(/answer larger than 4194304 bytes/);
  });

  it("an answer that never ends is cut at the timeout", async () => {
    const started = Date.now();
    const error = await getAdmin({ address, path: "/slow", timeoutMs: 500 }).catch((e: unknown) => e);
    expect((error as CliError).message).toMatch(/no answer within 500 ms/);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("ready but with malformed metrics: check reports an error naming the line", async () => {
    const findings: { check: string; status: string; message: string }[] = [];
    await checkProxyAdmin({ address, now: new Date() }, (check, status, message) => findings.push({ check, status, message }));
    expect(findings[0]).toMatchObject({ check: "proxy-ready", status: "ok" });
    expect(findings[1]).toMatchObject({ check: "proxy-cert-expiry", status: "error" });
    expect(findings[1]!.message).toMatch(/cannot read its metrics: metrics line 1 is malformed/);
  });
});
