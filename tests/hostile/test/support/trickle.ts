// Slow-loris clients: a connection that sends its bytes slowly enough to hold a server's resources.
import net from "node:net";
import tls from "node:tls";
import { hostOf, portOf } from "./mesh.ts";

export interface TrickleOptions {
  /** Written at once on connecting (after the TLS handshake when `tls` is given). */
  first?: Buffer;
  /** Written one after another, one every `everyMs`, from the first again once all are sent. */
  chunks: Buffer[];
  everyMs: number;
  /** How long the connection may stay open before the row counts it as held. */
  boundMs: number;
  tls?: tls.ConnectionOptions | undefined;
}

/**
 * Connects (TLS first when `options.tls` is given), writes `first`, then trickles `chunks`; resolves with the ms
 * until the server hung up (undefined if it still held the connection at `boundMs`) and how many chunks were sent.
 */
export function trickleUntilClosed(address: string, options: TrickleOptions): Promise<{ closedAfterMs: number | undefined; sent: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    const socket: net.Socket =
      options.tls === undefined ? net.connect({ host: hostOf(address), port: portOf(address) }) : tls.connect({ host: hostOf(address), port: portOf(address), ...options.tls });
    const done = (closedAfterMs: number | undefined): void => {
      clearInterval(timer);
      clearTimeout(bound);
      socket.destroy();
      resolve({ closedAfterMs, sent });
    };
    const bound = setTimeout(() => done(undefined), options.boundMs);
    socket.once(options.tls === undefined ? "connect" : "secureConnect", () => {
      if (options.first !== undefined && options.first.length > 0) socket.write(options.first);
      timer = setInterval(() => {
        const chunk = options.chunks[sent % options.chunks.length];
        if (!socket.destroyed && chunk !== undefined) socket.write(chunk);
        sent++;
      }, options.everyMs);
    });
    socket.on("data", () => undefined);
    socket.on("error", () => undefined);
    socket.once("close", () => done(Date.now() - started));
  });
}

/** Bytes one at a time. */
export const bytesOf = (buffer: Buffer): Buffer[] => Array.from(buffer, (byte) => Buffer.from([byte]));
