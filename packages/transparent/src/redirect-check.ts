import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { isIPv6 } from "node:net";
import { TransparentError } from "./errors.ts";
import { dialProbe } from "./probe-dialer.ts";
import { OUTPUT_CHAIN } from "./rules.ts";

/** An address to dial: `host` an IP literal. */
export interface ProbeAddress {
  host: string;
  port: number;
}

/**
 * Opens the probe connection and writes `token` and a newline on it. Resolves
 * once the peer answered, rejects with the dial's error (its `code`, e.g.
 * `EHOSTUNREACH`, `ETIMEDOUT`).
 */
export type ProbeDialer = (probe: ProbeAddress, token: string, timeoutMs: number) => Promise<void>;

/** One check's outcome. */
export type RedirectCheckResult =
  | { ok: true; elapsedMs: number }
  | { ok: false; error: TransparentError };

/** Options of {@link createRedirectCheck}. */
export interface CreateRedirectCheckOptions {
  /**
   * Where the probe dials: an address that nothing answers unless the
   * redirect sends the connection to the outbound listener (Linkerd's
   * validator uses 1.1.1.1:20001); `meshtls init --redirect-check-addr`'s rule
   * redirects it.
   */
  probe: ProbeAddress;
  /** The outbound port the redirect should send connections to (named in the error). Default 4140. */
  outboundPort?: number;
  /** Opens the probe connection. Default: from this process (`node:net`). */
  dial?: ProbeDialer;
  /** Time between checks, in milliseconds; the first runs at `start()`. Default 10000. */
  intervalMs?: number;
  /** How long one probe may take to arrive, in milliseconds. Default 5000 (at most `intervalMs`). */
  timeoutMs?: number;
  /** The probe's random token (no newline). Default 16 random bytes from `node:crypto`, hex. */
  randomToken?: () => string;
  /** Called after each check, in order. */
  onResult?: (result: RedirectCheckResult) => void;
}

/** A running redirect check: the dialing side and the outbound listener's side. */
export interface RedirectCheck {
  /**
   * For the transparent outbound listener, before it forwards a redirected
   * connection: takes the connection when its original destination is the
   * probe address (answers it, never forwards it) and returns true; false for
   * every other connection, which the listener serves as usual.
   */
  intercept(socket: Socket, originalDestination: ProbeAddress): boolean;
  /** Runs one check now (or joins the one running). */
  checkNow(): Promise<RedirectCheckResult>;
  /** The last check's outcome; undefined before the first ends. */
  current(): RedirectCheckResult | undefined;
  /** Checks now and every `intervalMs`. */
  start(): void;
  stop(): void;
}

const TOKEN_BYTES_MAX = 128;
const sameAddress = (a: ProbeAddress, b: ProbeAddress): boolean => a.port === b.port && normalize(a.host) === normalize(b.host);
const normalize = (host: string): string => (host.startsWith("::ffff:") && !isIPv6(host.slice(7)) ? host.slice(7) : host.toLowerCase());

/**
 * Checks, at start and every `intervalMs`, that connections leaving the pod
 * go through the nat rules to the proxy's outbound listener: dials the probe
 * address with a random token and sees whether a connection carrying that
 * token, redirected from that address, arrived at the listener (`intercept`).
 * `meshtls init`'s probe rule, first in PROXY_INIT_OUTPUT, redirects the
 * probe, so it arrives only while the OUTPUT jump and the chain are in place
 * (it does not see the catch-all REDIRECT rule alone deleted). Linkerd's
 * network-validator checks once, at pod start; this keeps checking, so a jump
 * deleted later is seen within one interval. A probe that does not arrive
 * fails with `ERR_REDIRECT_MISSING`, naming the rules expected.
 */
export function createRedirectCheck(options: CreateRedirectCheckOptions): RedirectCheck {
  const intervalMs = options.intervalMs ?? 10_000;
  const timeoutMs = Math.min(options.timeoutMs ?? 5000, intervalMs > 0 ? intervalMs : Infinity);
  const outboundPort = options.outboundPort ?? 4140;
  const dial = options.dial ?? dialProbe;
  const { host, port } = options.probe;
  const probeRule = `-A ${OUTPUT_CHAIN} -d ${host}/${isIPv6(host) ? 128 : 32} -p tcp -m tcp --dport ${port} -j REDIRECT --to-ports ${outboundPort}`;
  /** Tokens of probes in flight → their arrival. */
  const waiting = new Map<string, () => void>();
  let last: RedirectCheckResult | undefined;
  let running: Promise<RedirectCheckResult> | undefined;
  let timer: NodeJS.Timeout | undefined;

  const missing = (why: string, cause?: unknown): TransparentError =>
    new TransparentError(
      "ERR_REDIRECT_MISSING",
      `the outbound redirect is missing: a probe to ${host}:${port} did not reach the outbound listener (${why}); ` +
        `expected in the nat table "-A OUTPUT -j ${OUTPUT_CHAIN}" and, first in that chain, "${probeRule}" (run meshtls init)`,
      cause === undefined ? undefined : { cause },
    );

  async function check(): Promise<RedirectCheckResult> {
    const token = (options.randomToken ?? (() => randomBytes(16).toString("hex")))();
    const started = performance.now();
    let arrivedNow: () => void = () => undefined;
    const arrived = new Promise<"arrived">((resolve) => (arrivedNow = () => resolve("arrived")));
    waiting.set(token, arrivedNow);
    let deadline: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => (deadline = setTimeout(() => resolve("timeout"), timeoutMs)));
    // The dial's own outcome only explains a failure: arrival at the listener is what counts.
    const dialFailed = dial(options.probe, token, timeoutMs).then(
      () => arrived,
      (error: unknown) => ({ failed: error }),
    );
    try {
      const first = await Promise.race([arrived, timedOut, dialFailed]);
      if (first === "arrived") return { ok: true, elapsedMs: Math.round(performance.now() - started) };
      if (first === "timeout") return { ok: false, error: missing(`nothing arrived in ${timeoutMs} ms`) };
      if (first.failed instanceof TransparentError) return { ok: false, error: first.failed };
      const code = (first.failed as { code?: unknown }).code;
      return { ok: false, error: missing(typeof code === "string" ? code : (first.failed as Error).message, first.failed) };
    } finally {
      clearTimeout(deadline);
      waiting.delete(token);
    }
  }

  const checkNow = (): Promise<RedirectCheckResult> => {
    running ??= check().then((result) => {
      running = undefined;
      last = result;
      options.onResult?.(result);
      return result;
    });
    return running;
  };

  return {
    intercept(socket, originalDestination) {
      if (!sameAddress(originalDestination, options.probe)) return false;
      socket.on("error", () => undefined);
      socket.setTimeout(timeoutMs, () => socket.destroy());
      let received = "";
      socket.setEncoding("latin1");
      socket.on("data", (chunk: string) => {
        received += chunk;
        const end = received.indexOf("\n");
        if (end < 0 && received.length < TOKEN_BYTES_MAX) return;
        socket.pause();
        const arrivedNow = end < 0 ? undefined : waiting.get(received.slice(0, end));
        // A token nobody waits for (stale, or someone else's) is answered the same, and counts for nothing.
        socket.end(arrivedNow === undefined ? "unknown\n" : "ok\n");
        arrivedNow?.();
      });
      socket.resume();
      return true;
    },
    checkNow,
    current: () => last,
    start() {
      if (intervalMs <= 0 || timer !== undefined) return;
      void checkNow();
      timer = setInterval(() => void checkNow(), intervalMs);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
      timer = undefined;
    },
  };
}
