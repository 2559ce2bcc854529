// Raw conversations with a listener: bytes in, whatever comes back, and whether the server hung up.
import net from "node:net";
import tls from "node:tls";
import { hostOf, portOf } from "./mesh.ts";

export interface Exchanged {
  /** Everything the server sent. */
  bytes: Buffer;
  /** The server closed (or reset) the connection before our deadline. */
  closedByServer: boolean;
  /** When it did, after how long since connecting (ms). */
  closedAfterMs?: number;
  /** A TLS or socket error seen, if any. */
  error?: string;
}

export interface ExchangeOptions {
  /** Wait at most this long for the server to answer and hang up. Default 5000. */
  timeoutMs?: number;
  /** TLS client options (a TLS connection instead of TCP). */
  tls?: tls.ConnectionOptions;
  /** After writing: `end` half-closes, `destroy` drops the connection at once, `keep` (default) waits. */
  after?: "end" | "destroy" | "keep";
  /** Stop waiting as soon as this many bytes arrived. */
  enoughBytes?: number;
}

/** Connects to `address`, writes `data` (in order, as separate writes) and collects the answer. */
export function exchange(address: string, data: Buffer | Buffer[], options: ExchangeOptions = {}): Promise<Exchanged> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const chunks = Array.isArray(data) ? data : [data];
  return new Promise((resolve) => {
    const started = Date.now();
    const received: Buffer[] = [];
    let size = 0;
    let error: string | undefined;
    let settled = false;
    const socket: net.Socket =
      options.tls === undefined
        ? net.connect({ host: hostOf(address), port: portOf(address) })
        : tls.connect({ host: hostOf(address), port: portOf(address), ...options.tls });
    const finish = (closedByServer: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const bytes = Buffer.concat(received);
      resolve({ bytes, closedByServer, ...(closedByServer ? { closedAfterMs: Date.now() - started } : {}), ...(error === undefined ? {} : { error }) });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (chunk: Buffer) => {
      received.push(chunk);
      size += chunk.length;
      if (options.enoughBytes !== undefined && size >= options.enoughBytes) finish(false);
    });
    socket.on("error", (e: Error) => {
      error = e.message;
      finish(true);
    });
    socket.on("close", () => finish(true));
    socket.on("end", () => finish(true));
    socket.once(options.tls === undefined ? "connect" : "secureConnect", () => {
      for (const chunk of chunks) socket.write(chunk);
      if (options.after === "end") socket.end();
      if (options.after === "destroy") setImmediate(() => finish(false));
    });
  });
}

/** The status of an HTTP/1 response at the start of `bytes`, if any. */
export function httpStatus(bytes: Buffer): number | undefined {
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(bytes.subarray(0, 32).toString("latin1"));
  return match === null ? undefined : Number(match[1]);
}

/** GET `http://address/path` with a deadline: the status, or undefined when nothing answered. */
export async function httpGet(address: string, path: string, timeoutMs = 5000): Promise<{ status: number; text: string } | undefined> {
  try {
    const response = await fetch(`http://${address}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: response.status, text: await response.text() };
  } catch {
    return undefined;
  }
}

/** The sum of every sample of `name` whose labels contain each fragment. */
export function metricSum(metrics: string, name: string, ...fragments: string[]): number {
  let sum = 0;
  for (const line of metrics.split("\n")) {
    if ((line.startsWith(`${name}{`) || line.startsWith(`${name} `)) && fragments.every((f) => line.includes(f))) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

export async function scrape(admin: string): Promise<string> {
  return (await httpGet(admin, "/metrics", 10_000))?.text ?? "";
}

/** The samples of `name` that grew between two scrapes, as `{labels} +delta`. */
export function grown(before: string, after: string, name: string): string[] {
  const samples = (text: string): Map<string, number> => {
    const out = new Map<string, number>();
    for (const line of text.split("\n")) {
      if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
        const cut = line.lastIndexOf(" ");
        out.set(line.slice(name.length, cut), Number(line.slice(cut + 1)));
      }
    }
    return out;
  };
  const old = samples(before);
  return [...samples(after)].filter(([labels, value]) => value > (old.get(labels) ?? 0)).map(([labels, value]) => `${labels} +${value - (old.get(labels) ?? 0)}`);
}
