// The attacks on a gRPC port (identity Certify, destination Get): raw HTTP/2 frames and malformed messages.
import { randomBytes } from "node:crypto";
import type tls from "node:tls";
import fc from "fast-check";
import { it } from "vitest";
import { call, decodesAsRequest, describeCall, refusedCall } from "./grpc.ts";
import { connectRawH2, Flag, frame, FrameType, grpcMessage, grpcRequestHeaders, headerBlock } from "./http2-frames.ts";
import type { RawH2 } from "./http2-frames.ts";
import type { Service } from "./mesh.ts";
import { poll, sleep } from "./processes.ts";
import { attack, createTally, expectHolds } from "./results.ts";
import type { Outcome, Target } from "./results.ts";

export interface GrpcTarget {
  service: Service;
  target: Target;
  /** The method attacked. */
  path: string;
  /** TLS options of a client (with a client certificate where the server requires one). */
  tls?: tls.ConnectionOptions | undefined;
}

/** What the idle-stream flood must show. */
export interface FloodBound {
  /** Streams one connection may hold open at once (beyond: refused). */
  maxOpenStreams: number;
  /** Every admitted stream is ended by the server within this (undefined: long-lived streams are allowed). */
  endedWithinMs?: number;
  /** Most RSS growth allowed while 5,000 streams are attempted, in KiB. */
  maxRssDeltaKiB: number;
}

const REFUSED = "an error status or a reset (never OK, never silence)";
const CLOSED = "the connection refused by the server (GOAWAY with an error, or a hang-up) within 5 s";

/** The highest frame type RFC 9113 defines (CONTINUATION); a frame of any other type is ignored by the receiver. */
const LAST_KNOWN_FRAME_TYPE = 0x9;

/** SETTINGS_MAX_FRAME_SIZE's initial value: a longer frame is a FRAME_SIZE_ERROR as soon as its header is read. */
const MAX_FRAME_SIZE = 16_384;

/**
 * `size` random bytes the server must judge: frames of unknown types that fit are skipped (a receiver ignores them,
 * RFC 9113 §4.1); the next frame must then fit, or declare more than the maximum frame size. A draw whose frame in
 * progress is a legal length not all sent (about 1 in 1,500 here, e.g. an unknown type declaring 13 KiB) is a frame
 * the server rightly waits for, not garbage it must refuse: such draws are made again.
 */
function judgedGarbage(size: number): Buffer {
  for (;;) {
    const bytes = randomBytes(size);
    const fits = (at: number): boolean => at + 9 + bytes.readUIntBE(at, 3) <= size;
    let at = 0;
    while (at + 9 <= size && fits(at) && (bytes[at + 3] ?? 0) > LAST_KNOWN_FRAME_TYPE) at += 9 + bytes.readUIntBE(at, 3);
    if (at + 9 <= size && (fits(at) || bytes.readUIntBE(at, 3) > MAX_FRAME_SIZE)) return bytes;
  }
}

/** The server hung up, or sent GOAWAY with an error code (what it does with the socket then is the slow-loris file's business). */
async function closedWithin(h2: RawH2, ms: number): Promise<Outcome> {
  const errorCode = (): number => h2.goaway()?.payload.readUInt32BE(4) ?? 0;
  const refused = await poll(() => (h2.closed() || errorCode() !== 0 ? true : undefined), ms, 50);
  await sleep(200);
  const goaway = h2.goaway();
  const code = goaway === undefined ? "" : `GOAWAY ${goaway.payload.readUInt32BE(4)}, `;
  const result = `${code}${h2.closed() ? "closed" : "left open"}`;
  h2.close();
  return { result, ok: refused === true };
}

/** Stream 1 refused: reset or ended with an error, or the connection closed. */
async function streamRefused(h2: RawH2, ms: number): Promise<Outcome> {
  const ended = await poll(() => (h2.endedStreams().has(1) || h2.closed() ? true : undefined), ms, 50);
  const goaway = h2.goaway();
  const what = h2.endedStreams().has(1) ? "stream ended/reset" : h2.closed() ? `${goaway === undefined ? "" : `GOAWAY ${goaway.payload.readUInt32BE(4)}, `}closed` : "stream left open";
  h2.close();
  return { result: what, ok: ended === true };
}

/** Registers the gRPC-port attacks of one listener as tests. */
export function defineGrpcAttacks(listener: string, get: () => GrpcTarget, flood: FloodBound): void {
  const raw = (): Promise<RawH2> => {
    const { service, tls: tlsOptions } = get();
    return connectRawH2(service.grpc, tlsOptions === undefined ? {} : { tls: tlsOptions });
  };
  const scheme = (): string => (get().tls === undefined ? "http" : "https");
  const http2Tls = (): tls.ConnectionOptions | undefined => get().tls;

  const cases: [string, string, () => Promise<Outcome>][] = [
    ["1 KiB of garbage after the HTTP/2 preface", CLOSED, async () => {
      const h2 = await raw();
      h2.write(judgedGarbage(1024));
      return closedWithin(h2, 5000);
    }],
    ["garbage instead of the preface", CLOSED, async () => {
      const { service, tls: tlsOptions } = get();
      const h2 = await connectRawH2(service.grpc, { ...(tlsOptions === undefined ? {} : { tls: tlsOptions }), preface: false });
      h2.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + "\u0000".repeat(100), "latin1"));
      return closedWithin(h2, 5000);
    }],
    ["truncated HEADERS frame (declares 16 KiB, sends 100 B, hangs up)", "the process unaffected", async () => {
      const h2 = await raw();
      const full = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(16_384, 0x41));
      h2.write(full.subarray(0, 109));
      await sleep(200);
      h2.close();
      return { result: "dropped by the client", ok: true };
    }],
    ["DATA with a 4 GiB gRPC length prefix", REFUSED, async () => {
      const r = await call(get().service, get().path, grpcMessage(randomBytes(64), 0xffffffff), { tls: http2Tls() });
      return { result: describeCall(r), ok: refusedCall(r) };
    }],
    ["a 10 MiB message", REFUSED, async () => {
      const r = await call(get().service, get().path, grpcMessage(Buffer.alloc(10 * 1024 * 1024, 0x0a)), { tls: http2Tls(), timeoutMs: 20_000 });
      return { result: describeCall(r), ok: refusedCall(r) };
    }],
    ["a message that is not protobuf (wire type 7)", "INVALID_ARGUMENT (the client's error; never INTERNAL)", async () => {
      const r = await call(get().service, get().path, grpcMessage(Buffer.from([0x0f, 0x01, 0x02])), { tls: http2Tls() });
      return { result: describeCall(r), ok: r.grpcStatus === 3 };
    }],
    ["wrong content-type (text/plain)", REFUSED, async () => {
      const r = await call(get().service, get().path, grpcMessage(Buffer.alloc(0)), { tls: http2Tls(), contentType: "text/plain" });
      return { result: describeCall(r), ok: refusedCall(r) };
    }],
    ["HEADERS with a 1 MiB header list (CONTINUATION frames)", "the stream or connection refused within 5 s", async () => {
      const h2 = await raw();
      const big = headerBlock([["x-big", "a".repeat(16_000)]]);
      h2.write(frame(FrameType.HEADERS, 0, 1, headerBlock(grpcRequestHeaders(get().path, { scheme: scheme() }))));
      for (let i = 0; i < 64 && !h2.closed(); i++) h2.write(frame(FrameType.CONTINUATION, i === 63 ? Flag.END_HEADERS : 0, 1, big));
      return streamRefused(h2, 5000);
    }],
    ["CONTINUATION flood (20,000 frames, never END_HEADERS)", "the connection closed within 5 s", async () => {
      const h2 = await raw();
      h2.write(frame(FrameType.HEADERS, 0, 1, headerBlock(grpcRequestHeaders(get().path, { scheme: scheme() }))));
      const one = frame(FrameType.CONTINUATION, 0, 1, headerBlock([["x-a", "b"]]));
      for (let i = 0; i < 20; i++) {
        if (h2.closed()) break;
        h2.write(Buffer.concat(Array.from({ length: 1000 }, () => one)));
        await sleep(10);
      }
      return closedWithin(h2, 5000);
    }],
  ];
  for (const [name, expected, run] of cases) {
    it(`${listener}: ${name}`, async () => {
      expectHolds(await attack(get().target, listener, name, expected, run));
    });
  }

  it(`${listener}: bad protobuf bodies (fast-check, 25 runs)`, async () => {
    const expected = "INVALID_ARGUMENT for every body that does not decode; an error status or a reset for the rest; never OK, INTERNAL, UNKNOWN or silence";
    const row = await attack(get().target, listener, "bad protobuf bodies (fast-check)", expected, async () => {
      const tally = createTally();
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), async (body) => {
          const r = await call(get().service, get().path, grpcMessage(Buffer.from(body)), { tls: http2Tls(), timeoutMs: 5000 });
          const malformed = !decodesAsRequest(get().path, body);
          const key = `${malformed ? "malformed" : "decodable"}: ${describeCall(r).split(" (")[0] ?? ""}`;
          // A client's error gets a client-error status: INTERNAL (13) and UNKNOWN (2) say the server failed.
          const ok = malformed ? r.grpcStatus === 3 : refusedCall(r) && r.grpcStatus !== 13 && r.grpcStatus !== 2;
          return tally.note(key, ok, () => `${describeCall(r)} for ${malformed ? "malformed " : ""}${Buffer.from(body).toString("hex").slice(0, 32)}`);
        }),
        { numRuns: 25, endOnFailure: true, interruptAfterTimeLimit: 30_000 },
      ).catch(() => undefined);
      return tally.outcome();
    });
    expectHolds(row);
  });

  it(`${listener}: random frame sequences after the preface (fast-check, 25 runs)`, async () => {
    const row = await attack(get().target, listener, "random HTTP/2 frames (fast-check)", "the process unaffected", async () => {
      const frameArb = fc.record({
        type: fc.nat({ max: 10 }),
        flags: fc.nat({ max: 255 }),
        streamId: fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.nat()),
        payload: fc.uint8Array({ maxLength: 64 }),
      });
      let closed = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(frameArb, { minLength: 1, maxLength: 12 }), async (frames) => {
          const h2 = await raw();
          for (const f of frames) h2.write(frame(f.type, f.flags, f.streamId, Buffer.from(f.payload)));
          await sleep(100);
          if (h2.closed()) closed++;
          h2.close();
          return get().target.proc.alive();
        }),
        { numRuns: 25, endOnFailure: true, interruptAfterTimeLimit: 30_000 },
      );
      return { result: `${closed} of 25 connections closed by the server`, ok: true };
    });
    expectHolds(row);
  });

  const endedWithinMs = flood.endedWithinMs;
  if (endedWithinMs !== undefined) {
    it(`${listener}: idle streams within the advertised cap are ended by a server-side deadline`, async () => {
      const expected = `every stream ended by the server within ${endedWithinMs / 1000} s`;
      const row = await attack(get().target, listener, "idle streams within the cap (deadline)", expected, async () => {
        const h2 = await raw();
        await poll(() => (h2.settingsSeen() ? true : undefined), 5000, 20);
        await sleep(100);
        // As many as the server allows (100 at most): none is refused, so only a deadline can end them.
        const count = Math.min(100, h2.maxConcurrentStreams() ?? 100);
        const block = headerBlock(grpcRequestHeaders(get().path, { scheme: scheme() }));
        const openedAt = Date.now();
        h2.write(Buffer.concat(Array.from({ length: count }, (_, i) => frame(FrameType.HEADERS, Flag.END_HEADERS, 1 + 2 * i, block))));
        await poll(() => (h2.closed() || h2.endedStreams().size >= count ? true : undefined), endedWithinMs, 250);
        const ended = h2.endedStreams().size;
        const last = Math.max(openedAt, ...h2.endedStreams().values(), h2.closedAt() ?? 0);
        const allEnded = ended >= count || h2.closed();
        h2.close();
        return {
          result: allEnded ? `${count} streams, all ended after ${((last - openedAt) / 1000).toFixed(1)} s${h2.closedAt() === undefined ? "" : " (connection closed)"}` : `${count - ended} of ${count} still open at ${endedWithinMs / 1000} s`,
          ok: allEnded,
        };
      });
      expectHolds(row);
    });
  }

  it(`${listener}: 5,000 idle streams on one connection (never send their message)`, async () => {
    const expected = `at most ${flood.maxOpenStreams} open at once${flood.endedWithinMs === undefined ? "" : `, each ended within ${flood.endedWithinMs / 1000} s`}, RSS +${flood.maxRssDeltaKiB / 1024} MiB at most`;
    let peakRssKiB = 0;
    const row = await attack(get().target, listener, "5,000 idle streams, one connection", expected, async () => {
      const proc = get().target.proc;
      const before = proc.rssKiB();
      const h2 = await raw();
      await poll(() => (h2.settingsSeen() ? true : undefined), 5000, 20);
      await sleep(100); // our SETTINGS ACK reaches the server first
      const block = headerBlock(grpcRequestHeaders(get().path, { scheme: scheme() }));
      const openedAt = Date.now();
      for (let batch = 0; batch < 10 && !h2.closed(); batch++) {
        const frames: Buffer[] = [];
        for (let i = 0; i < 500; i++) frames.push(frame(FrameType.HEADERS, Flag.END_HEADERS, 1 + 2 * (batch * 500 + i), block));
        h2.write(Buffer.concat(frames));
        await sleep(20);
      }
      await sleep(3000);
      const during = proc.rssKiB();
      peakRssKiB = during - before;
      const openAfter3s = h2.closed() ? 0 : 5000 - h2.endedStreams().size;
      let allEndedAfterMs: number | undefined;
      if (flood.endedWithinMs !== undefined) {
        const deadline = openedAt + flood.endedWithinMs;
        await poll(() => (h2.closed() || h2.endedStreams().size >= 5000 ? true : undefined), Math.max(0, deadline - Date.now()), 250);
        const last = Math.max(0, ...h2.endedStreams().values(), h2.closedAt() ?? 0);
        if (h2.closed() || h2.endedStreams().size >= 5000) allEndedAfterMs = last - openedAt;
      }
      const stillOpen = h2.closed() ? 0 : 5000 - h2.endedStreams().size;
      const advertised = h2.maxConcurrentStreams();
      const capped = openAfter3s <= flood.maxOpenStreams;
      const timedOut = flood.endedWithinMs === undefined || allEndedAfterMs !== undefined;
      const rssOk = peakRssKiB <= flood.maxRssDeltaKiB;
      const goaway = h2.goaway();
      const hungUp = h2.closed() ? `connection closed by the server after ${(((h2.closedAt() ?? openedAt) - openedAt) / 1000).toFixed(1)} s${goaway === undefined ? "" : ` (GOAWAY ${goaway.payload.readUInt32BE(4)})`}; ` : "";
      const result =
        `advertised max streams ${advertised ?? "unlimited"}; ${hungUp}open after 3 s: ${openAfter3s}; ` +
        (flood.endedWithinMs === undefined ? "" : allEndedAfterMs === undefined ? `${stillOpen} still open at ${flood.endedWithinMs / 1000} s; ` : `all ended after ${(allEndedAfterMs / 1000).toFixed(1)} s; `) +
        `RSS ${(before / 1024).toFixed(1)} → ${(during / 1024).toFixed(1)} MiB (+${(peakRssKiB / 1024).toFixed(1)})`;
      h2.close();
      console.log(`${listener} idle-stream flood: ${result}`);
      return { result, ok: capped && timedOut && rssOk };
    });
    expectHolds(row);
  });
}
