// Hand-made HTTP/2 frames (RFC 9113) for attacks no well-behaved client library would send.
import net from "node:net";
import tls from "node:tls";
import { hostOf, portOf } from "./mesh.ts";

export const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export const FrameType = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
function hpackInt(value: number, prefixBits: number, first = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/** Header fields as "literal without indexing, new name", no Huffman: no state shared with the server. */
export function headerBlock(fields: [string, string][]): Buffer {
  return Buffer.concat(
    fields.flatMap(([name, value]) => {
      const n = Buffer.from(name, "latin1");
      const v = Buffer.from(value, "latin1");
      return [Buffer.from([0x00]), hpackInt(n.length, 7), n, hpackInt(v.length, 7), v];
    }),
  );
}

/** The request headers of a gRPC call to `path`. */
export function grpcRequestHeaders(path: string, options: { scheme?: string; contentType?: string } = {}): [string, string][] {
  return [
    [":method", "POST"],
    [":scheme", options.scheme ?? "http"],
    [":path", path],
    [":authority", "attacker"],
    ["content-type", options.contentType ?? "application/grpc"],
    ["te", "trailers"],
  ];
}

/** A gRPC message frame: compressed flag, u32 length (as declared, not necessarily true), body. */
export function grpcMessage(body: Buffer, declaredLength = body.length): Buffer {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declaredLength >>> 0, 1);
  return Buffer.concat([prefix, body]);
}

export function settings(entries: [number, number][] = []): Buffer {
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FrameType.SETTINGS, 0, 0, payload);
}

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A raw HTTP/2 client connection: frames the server sends are parsed and kept. */
export interface RawH2 {
  socket: net.Socket;
  frames: Frame[];
  /** The server's SETTINGS_MAX_CONCURRENT_STREAMS, once its SETTINGS arrived (undefined: not sent = unlimited). */
  maxConcurrentStreams(): number | undefined;
  /** The server sent its SETTINGS. */
  settingsSeen(): boolean;
  closed(): boolean;
  closedAt(): number | undefined;
  /** Streams the server ended: RST_STREAM, or a HEADERS/DATA frame with END_STREAM. */
  endedStreams(): Map<number, number>;
  goaway(): Frame | undefined;
  write(data: Buffer): void;
  close(): void;
}

/**
 * Connects (TLS with ALPN h2 when `tls` is given), sends the preface and an
 * empty SETTINGS, and acknowledges the server's SETTINGS like any client.
 */
export function connectRawH2(address: string, options: { tls?: tls.ConnectionOptions; preface?: boolean } = {}): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const frames: Frame[] = [];
    const ended = new Map<number, number>();
    let buffer: Buffer = Buffer.alloc(0);
    let maxStreams: number | undefined;
    let settingsSeen = false;
    let closedAt: number | undefined;
    const socket: net.Socket =
      options.tls === undefined
        ? net.connect({ host: hostOf(address), port: portOf(address) })
        : tls.connect({ host: hostOf(address), port: portOf(address), ALPNProtocols: ["h2"], ...options.tls });
    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
      while (buffer.length >= 9) {
        const length = buffer.readUIntBE(0, 3);
        if (buffer.length < 9 + length) break;
        const f: Frame = { type: buffer[3] ?? 0, flags: buffer[4] ?? 0, streamId: buffer.readUInt32BE(5) & 0x7fffffff, payload: buffer.subarray(9, 9 + length) };
        buffer = buffer.subarray(9 + length);
        // Keep control frames; stream frames only as "ended" marks (a flood would fill memory otherwise).
        if (f.streamId === 0) frames.push(f);
        if (f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) === 0) {
          settingsSeen = true;
          for (let i = 0; i + 6 <= f.payload.length; i += 6) {
            if (f.payload.readUInt16BE(i) === SETTINGS_MAX_CONCURRENT_STREAMS) maxStreams = f.payload.readUInt32BE(i + 2);
          }
          if (!socket.destroyed) socket.write(frame(FrameType.SETTINGS, Flag.ACK, 0));
        }
        if (f.type === FrameType.RST_STREAM || ((f.type === FrameType.HEADERS || f.type === FrameType.DATA) && (f.flags & Flag.END_STREAM) !== 0)) {
          if (!ended.has(f.streamId)) ended.set(f.streamId, Date.now());
        }
      }
    });
    socket.on("error", (error: Error) => {
      if (closedAt === undefined) reject(error);
    });
    socket.on("close", () => (closedAt ??= Date.now()));
    socket.once(options.tls === undefined ? "connect" : "secureConnect", () => {
      if (options.preface !== false) socket.write(Buffer.concat([PREFACE, settings()]));
      resolve({
        socket,
        frames,
        maxConcurrentStreams: () => maxStreams,
        settingsSeen: () => settingsSeen,
        closed: () => closedAt !== undefined,
        closedAt: () => closedAt,
        endedStreams: () => ended,
        goaway: () => frames.find((f) => f.type === FrameType.GOAWAY),
        write: (data) => {
          if (!socket.destroyed) socket.write(data);
        },
        close: () => socket.destroy(),
      });
    });
  });
}
