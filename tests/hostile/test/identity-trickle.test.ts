// Clients that finish the HTTP/2 handshake and then trickle a request's HEADERS (a frame a byte at a time, or the
// CONTINUATION frames of a header block that never ends): node's HTTP/2 server has no header timeout and grpc-js
// times a call only once its HEADERS are complete, so only the services' PING (every 30 s, answered within 10 s;
// @meshtls/runtime limitGrpcConnections) cuts them. Each close, and each handshake timeout, must be counted once in
// grpc_connections_closed_total{listener,reason} on identity (--workers 2: summed over the workers) and destination.
import { writeFileSync } from "node:fs";
import path from "node:path";
import type tls from "node:tls";
import { afterAll, beforeAll, describe, it } from "vitest";
import { clientHello } from "./support/client-hello.ts";
import { CERTIFY, certifyWorks, GET, getWorks } from "./support/grpc.ts";
import { Flag, frame, FrameType, grpcRequestHeaders, headerBlock, PREFACE } from "./support/http2-frames.ts";
import { createMaterial, identityOf, startDestination, startIdentity } from "./support/mesh.ts";
import type { Leaf, Material, Service } from "./support/mesh.ts";
import { stopAll, tempDir } from "./support/processes.ts";
import { attack, expectHolds } from "./support/results.ts";
import type { Outcome, Target } from "./support/results.ts";
import { bytesOf, trickleUntilClosed } from "./support/trickle.ts";
import { httpGet, metricSum, scrape } from "./support/wire.ts";

/** The PING's 30 s + 10 s, and room for a loaded machine. */
const TRICKLE_BOUND_MS = 55_000;
/** One byte a second; whole CONTINUATION frames one every 6 s (nghttp2 closes a connection at a header block's 9th: 54 s). */
const BYTE_EVERY_MS = 1000;
const CONTINUATION_EVERY_MS = 6000;

/** The HTTP/2 preface and an empty SETTINGS frame: the handshake is complete once the server has read them. */
const H2_HANDSHAKE = Buffer.concat([PREFACE, frame(FrameType.SETTINGS, 0, 0)]);
/** A literal field `x` (no indexing, new name) whose value announces 16,000 bytes: valid HPACK that never completes. */
const ENDLESS_FIELD = Buffer.from([0x00, 0x01, 0x78, 0x7f, 0x81, 0x7c]);

/** The head of a HEADERS frame announcing 16 KiB (a call's headers, then the endless field), and its payload. */
function trickledHeaders(rpc: string): { head: Buffer; payload: Buffer } {
  const block = Buffer.concat([headerBlock(grpcRequestHeaders(rpc)), ENDLESS_FIELD]);
  const payload = Buffer.concat([block, Buffer.alloc(16_384 - block.length, 0x61)]);
  const head = frame(FrameType.HEADERS, Flag.END_HEADERS, 1, payload).subarray(0, 9);
  return { head, payload };
}

/** A HEADERS frame without END_HEADERS (a call's headers, then the endless field), and whole CONTINUATION frames of 10 bytes of it. */
function trickledContinuations(rpc: string): { first: Buffer; frames: Buffer[] } {
  const first = frame(FrameType.HEADERS, 0, 1, Buffer.concat([headerBlock(grpcRequestHeaders(rpc)), ENDLESS_FIELD]));
  return { first, frames: Array.from({ length: 100 }, () => frame(FrameType.CONTINUATION, 0, 1, Buffer.alloc(10, 0x61))) };
}

/** Writes `first`, then trickles `chunks` one every `everyMs`: the ms until the server hung up, or undefined if it held on past the bound. */
async function holdOpen(address: string, first: Buffer, chunks: Buffer[], everyMs: number, tlsOptions?: tls.ConnectionOptions): Promise<number | undefined> {
  return (await trickleUntilClosed(address, { first, chunks, everyMs, boundMs: TRICKLE_BOUND_MS, tls: tlsOptions })).closedAfterMs;
}

describe(`a request's HEADERS trickled after the HTTP/2 handshake: closed within ${TRICKLE_BOUND_MS / 1000} s and counted`, () => {
  let material: Material;
  let identityTls: Service;
  let identityPlain: Service;
  let destination: Service;
  let evil: Leaf;
  /** The legitimate peer of destination's serving check. */
  let good: Leaf;

  beforeAll(async () => {
    const dir = tempDir("identity-trickle");
    material = await createMaterial(dir);
    evil = await material.leaf(identityOf("evil"));
    good = await material.leaf(identityOf("web"));
    const registryFile = path.join(dir, "registry.yaml");
    writeFileSync(registryFile, "services:\n  - name: b\n    ports: [{ port: 80, targetPort: 8080 }]\n    endpoints: [{ address: 127.0.1.2, serviceAccount: b }]\n");
    [identityTls, identityPlain, destination] = await Promise.all([
      startIdentity(material, { name: "identity-trickle-tls", workers: 2 }),
      startIdentity(material, { name: "identity-trickle-plaintext", plaintext: true }),
      startDestination(material, { name: "destination-trickle", registryFile, tls: true }),
    ]);
  });
  afterAll(stopAll);

  const identityTarget = (service: () => Service): Target => ({
    get proc() {
      return service().proc;
    },
    serving: async () => (await httpGet(service().admin, "/ready"))?.status === 200 && (await certifyWorks(service(), material)),
  });
  const destinationTarget: Target = {
    get proc() {
      return destination.proc;
    },
    serving: async () => (await httpGet(destination.admin, "/ready"))?.status === 200 && (await getWorks(destination, material, good)),
  };
  const identityTlsOptions = (): tls.ConnectionOptions => ({ ca: material.caPem, servername: identityTls.serverName, ALPNProtocols: ["h2"] });
  const destinationTlsOptions = (): tls.ConnectionOptions => ({ ca: material.caPem, servername: destination.serverName, ALPNProtocols: ["h2"], key: evil.keyPem, cert: evil.chainPem });

  type Reason = "handshake_timeout" | "ping_timeout";
  /** A listener under attack: its counter's label, the table's description of it, and its process. */
  interface Place {
    listener: "identity" | "destination" | "policy";
    where: string;
    service: () => Service;
    target: Target;
  }
  interface Row extends Place {
    name: string;
    reason: Reason;
    open: () => Promise<number | undefined>;
  }
  const identityTlsPlace: Place = { listener: "identity", where: "identity gRPC TLS (--workers 2)", service: () => identityTls, target: identityTarget(() => identityTls) };
  const identityPlainPlace: Place = { listener: "identity", where: "identity gRPC plaintext", service: () => identityPlain, target: identityTarget(() => identityPlain) };
  const destinationPlace: Place = { listener: "destination", where: "destination gRPC mTLS", service: () => destination, target: destinationTarget };
  const policyPlace: Place = { listener: "policy", where: "destination policy API mTLS", service: () => destination, target: destinationTarget };
  // One row per (process, listener, reason): each counter is moved by its row alone, so its delta must be exactly 1.
  const headers = trickledHeaders(CERTIFY);
  const continuations = trickledContinuations(CERTIFY);
  const getHeaders = trickledHeaders(GET);
  /** A ClientHello trickled a byte a second to `place`'s TLS listener at `address`: cut by its handshake timeout. */
  const clientHelloRow = (place: Place, address: (service: Service) => string): Row => ({
    ...place,
    name: "ClientHello trickled a byte a second",
    reason: "handshake_timeout",
    open: () => holdOpen(address(place.service()), Buffer.alloc(0), bytesOf(clientHello(place.service().serverName, ["h2"])), BYTE_EVERY_MS),
  });
  const endlessBlock = "a header block that never ends: a whole CONTINUATION frame every 6 s after the HTTP/2 handshake";
  const rows: Row[] = [
    {
      ...identityTlsPlace,
      name: "a HEADERS frame trickled a byte a second after the HTTP/2 handshake",
      reason: "ping_timeout",
      open: () => holdOpen(identityTls.grpc, Buffer.concat([H2_HANDSHAKE, headers.head]), bytesOf(headers.payload), BYTE_EVERY_MS, identityTlsOptions()),
    },
    clientHelloRow(identityTlsPlace, (service) => service.grpc),
    {
      ...identityPlainPlace,
      name: endlessBlock,
      reason: "ping_timeout",
      open: () => holdOpen(identityPlain.grpc, Buffer.concat([H2_HANDSHAKE, continuations.first]), continuations.frames, CONTINUATION_EVERY_MS),
    },
    {
      ...identityPlainPlace,
      name: "HTTP/2 preface trickled a byte a second",
      reason: "handshake_timeout",
      open: () => holdOpen(identityPlain.grpc, Buffer.alloc(0), bytesOf(H2_HANDSHAKE), BYTE_EVERY_MS),
    },
    {
      ...destinationPlace,
      name: "a Get's HEADERS frame trickled a byte a second after the HTTP/2 handshake",
      reason: "ping_timeout",
      open: () => holdOpen(destination.grpc, Buffer.concat([H2_HANDSHAKE, getHeaders.head]), bytesOf(getHeaders.payload), BYTE_EVERY_MS, destinationTlsOptions()),
    },
    clientHelloRow(destinationPlace, (service) => service.grpc),
    {
      ...policyPlace,
      name: endlessBlock,
      reason: "ping_timeout",
      open: () => holdOpen(destination.policy ?? "", Buffer.concat([H2_HANDSHAKE, continuations.first]), continuations.frames, CONTINUATION_EVERY_MS, destinationTlsOptions()),
    },
    clientHelloRow(policyPlace, (service) => service.policy ?? ""),
  ];

  for (const row of rows) {
    it.concurrent(`${row.where}: ${row.name}`, async () => {
      const counted = async (): Promise<number> =>
        metricSum(await scrape(row.service().admin), "grpc_connections_closed_total", `listener="${row.listener}"`, `reason="${row.reason}"`);
      const expected = `closed by the server within ${TRICKLE_BOUND_MS / 1000} s, counted once as grpc_connections_closed_total{listener="${row.listener}",reason="${row.reason}"}`;
      const run = async (): Promise<Outcome> => {
        const before = await counted();
        const closedAfterMs = await row.open();
        const delta = (await counted()) - before;
        if (closedAfterMs === undefined) return { result: `still open after ${TRICKLE_BOUND_MS / 1000} s (${row.reason} +${delta})`, ok: false };
        return { result: `closed by the server after ${(closedAfterMs / 1000).toFixed(1)} s; ${row.reason} +${delta}`, ok: delta === 1 };
      };
      expectHolds(await attack(row.target, row.where, `slow-loris: ${row.name}`, expected, run));
    });
  }
});
