#!/usr/bin/env node
/* global process */
// Preloaded (`--import`) into the naive pair for the bench's `naivestreams` path: before the pair serves, node's
// shared stream code serves the other kinds of streams every real program has (an HTTP/1 server and keep-alive
// client, an HTTP/2 session as gRPC uses, PassThrough/Transform pipelines). V8 then sees more object shapes in
// node's Readable/Writable/EventEmitter functions, as it does in a proxy with a control plane, an admin server and
// metrics; the naive pair's own code is unchanged. The difference between `naive` and `naivestreams` is what a
// Node program pays for being more than a pipe, before any of its own per-chunk work.
import http from "node:http";
import http2 from "node:http2";
import { PassThrough, Readable, Transform, pipeline } from "node:stream";

const ROUNDS = 2000;
const h1 = http.createServer((req, res) => {
  req.resume();
  res.end("ok");
});
await new Promise((resolve) => h1.listen(0, "127.0.0.1", resolve));
const agent = new http.Agent({ keepAlive: true });
const get = () => new Promise((resolve) => http.get({ host: "127.0.0.1", port: h1.address().port, agent }, (res) => res.resume().on("end", resolve)));
for (let i = 0; i < ROUNDS / 4; i++) await Promise.all([get(), get(), get(), get()]);
agent.destroy();
h1.close();

const h2 = http2.createServer((req, res) => {
  req.resume();
  res.end("ok");
});
await new Promise((resolve) => h2.listen(0, "127.0.0.1", resolve));
const session = http2.connect(`http://127.0.0.1:${h2.address().port}`);
const request = () =>
  new Promise((resolve) => {
    const stream = session.request({ ":path": "/" });
    stream.resume().on("end", resolve);
    stream.end();
  });
for (let i = 0; i < ROUNDS / 4; i++) await Promise.all([request(), request(), request(), request()]);
session.close();
h2.close();

const identity = () => new Transform({ transform: (chunk, _encoding, done) => done(null, chunk) });
for (let i = 0; i < ROUNDS / 10; i++) {
  await new Promise((resolve) => pipeline(Readable.from([Buffer.alloc(100), Buffer.alloc(100)]), new PassThrough(), identity(), new PassThrough().on("data", () => undefined), resolve));
}
