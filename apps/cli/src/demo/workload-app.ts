// A tiny workload for `meshtls demo`: an HTTP app that answers with its name
// and, optionally, calls another service through its proxy's outbound port (as
// an HTTP proxy) at a fixed interval, logging each result as one JSON line.
// Usage: node workload-app.js --name web --listen 127.0.1.1:0
//          [--call http://api.default.svc.cluster.local/ --via 127.0.1.1:4140 --interval-ms 500]
import http from "node:http";
import type { AddressInfo } from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    name: { type: "string" },
    listen: { type: "string" },
    call: { type: "string" },
    via: { type: "string" },
    "interval-ms": { type: "string", default: "500" },
    "timeout-ms": { type: "string", default: "3000" },
  },
});

const log = (fields: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify({ time: Date.now(), ...fields })}\n`);
};

function hostPort(text: string | undefined, what: string): { host: string; port: number } {
  const m = /^([0-9.]+):(\d{1,5})$/.exec(text ?? "");
  if (m === null) {
    process.stderr.write(`workload-app: ${what} must be ip:port, not ${String(text)}\n`);
    process.exit(2);
  }
  return { host: m[1]!, port: Number(m[2]) };
}

const name = values.name ?? "app";
const listen = hostPort(values.listen, "--listen");
const server = http.createServer((req, res) => {
  req.resume();
  res.setHeader("content-type", "text/plain");
  res.end(`hello from ${name}\n`);
});
server.listen(listen.port, listen.host, () => {
  const address = server.address() as AddressInfo;
  log({ msg: "listening", address: `${address.address}:${address.port}` });
});

let timer: NodeJS.Timeout | undefined;
if (values.call !== undefined) {
  const via = hostPort(values.via, "--via");
  const target = new URL(values.call);
  const intervalMs = Math.max(50, Number(values["interval-ms"]));
  const timeoutMs = Math.max(100, Number(values["timeout-ms"]));
  let seq = 0;
  const call = (): void => {
    const n = ++seq;
    const started = Date.now();
    let done = false;
    const finish = (fields: Record<string, unknown>): void => {
      if (done) return;
      done = true;
      log({ msg: "call", seq: n, target: target.host, ms: Date.now() - started, ...fields });
      timer = setTimeout(call, intervalMs);
    };
    // A new connection for every request (no keep-alive), so that each one is a new mTLS connection between the proxies.
    const req = http.request(
      { host: via.host, port: via.port, method: "GET", path: target.href, headers: { host: target.host, connection: "close" }, agent: false, timeout: timeoutMs },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          if (body.length < 1024) body += chunk;
        });
        res.on("end", () => finish({ ok: res.statusCode === 200, status: res.statusCode, body: body.trim().slice(0, 200), proxyError: res.headers["l5d-proxy-error"] ?? null }));
        res.on("error", (error) => finish({ ok: false, error: error.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (error: NodeJS.ErrnoException) => finish({ ok: false, error: error.code ?? error.message }));
    req.end();
  };
  timer = setTimeout(call, 0);
}

const stop = (): void => {
  if (timer !== undefined) clearTimeout(timer);
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
