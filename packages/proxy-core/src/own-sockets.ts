import { isIPv4 } from "node:net";
import type net from "node:net";
import os from "node:os";
import { isLoopback } from "@meshtls/runtime";
import type { HostPort } from "./address.js";

/**
 * What the proxy knows about itself, so that no connection can be turned
 * against it: the addresses its listeners are bound to (a forward to one of
 * them is a loop) and the local ends of the connections it opened itself (a
 * request arriving from one of them on the admin port came through the
 * proxy, whatever its loopback source address says).
 */
export interface OwnSockets {
  /** Records a bound listener (the actual address, also when port 0 was asked). */
  addListener(address: { address: string; port: number }, kind: ListenerKind): void;
  /** Whether `port` is the port of one of the proxy's listeners, on any address. */
  isListenerPort(port: number): boolean;
  /** The kind of the proxy's listener that connecting to `target` reaches, if any. */
  listenerAt(target: HostPort): ListenerKind | undefined;
  /** The listeners' ports (for messages). */
  listenerPorts(): number[];
  /**
   * Records a connection the proxy opened to `dialled` (from the local
   * address `boundTo`, when it was bound to one), once it is connected: its
   * local end is remembered while it is open and for `graceMs` after it
   * closes, since bytes it wrote may still be read by the other end after
   * that. Only a loopback local end can pass the admin's loopback check: a
   * connection bound to, or else dialled to, an IPv4 address outside
   * 127.0.0.0/8 and 0.0.0.0/8 (whose local end is never loopback: every mesh
   * connection between pods on IPv4) is not read back at all, which spares a
   * system call per connection. Everything else — loopback, the unspecified
   * addresses (which reach this host), every IPv6 literal (whose loopback has
   * many spellings) and names — is recorded whatever the port, so the record
   * does not depend on the listener checks it backs up.
   */
  trackOpened(socket: net.Socket, dialled: HostPort, boundTo?: string): void;
  /** Whether `address:port` is the local end of a connection the proxy opened. */
  openedByProxy(address: string | undefined, port: number | undefined): boolean;
}

/** The proxy's listeners (`tap`: the remote tap server, `--tap-addr`). */
export type ListenerKind = "inbound" | "outbound" | "route" | "admin" | "tap";

/** Options of {@link createOwnSockets}. */
export interface CreateOwnSocketsOptions {
  /** How long a closed connection's local end is still recognised, in ms. Default 10000. */
  graceMs?: number;
  /** Default `() => Date.now()`. */
  now?: () => number;
}

const WILDCARDS = new Set(["0.0.0.0", "::"]);
const DOTTED_DECIMAL = /^[\d.]+$/;

/** `::ffff:a.b.c.d` as `a.b.c.d`; `localhost` as 127.0.0.1; lower-cased. */
function normalizeHost(host: string): string {
  // An IPv4 address as node reports it (the common case, per connection) is already normal.
  if (DOTTED_DECIMAL.test(host)) return host;
  const lower = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (lower === "localhost") return "127.0.0.1";
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower)?.[1] ?? lower;
}

/**
 * Whether a connection dialled to `host` cannot have a loopback local end: an IPv4 literal (node's dotted form, no
 * leading zeros) outside 127.0.0.0/8 and 0.0.0.0/8 (Linux takes 0.0.0.0 for this host).
 */
function neverLoopback(host: string): boolean {
  return isIPv4(host) && !host.startsWith("127.") && !host.startsWith("0.");
}

/** Every address of this host's interfaces, normalized. */
function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const infos of Object.values(os.networkInterfaces())) {
    for (const info of infos ?? []) out.add(normalizeHost(info.address));
  }
  return out;
}

/** Creates the proxy's record of its own listeners and opened connections. */
export function createOwnSockets(options: CreateOwnSocketsOptions = {}): OwnSockets {
  const graceMs = options.graceMs ?? 10_000;
  const now = options.now ?? (() => Date.now());
  const listeners: { host: string; port: number; kind: ListenerKind }[] = [];
  const ports = new Set<number>();
  // Local ends of open connections (counted: one end may be reused once closed).
  const open = new Map<string, number>();
  // Local ends of recently closed connections, in two generations of graceMs
  // each: an end is recognised for at least graceMs after its close, and the
  // memory is bounded by the closes of the last 2 × graceMs.
  let recent = new Set<string>();
  let older = new Set<string>();
  let rotatedAt = now();
  const rotate = (): void => {
    const elapsed = now() - rotatedAt;
    if (elapsed < graceMs) return;
    older = elapsed < 2 * graceMs ? recent : new Set();
    recent = new Set();
    rotatedAt = now();
  };
  const keyOf = (address: string, port: number): string => `${normalizeHost(address)}|${port}`;

  /** Whether a listener bound to `listenerHost` is reached by connecting to `host`. */
  const reaches = (listenerHost: string, host: string): boolean => {
    if (listenerHost === host) return true;
    if (WILDCARDS.has(host)) return isLoopback(listenerHost) || WILDCARDS.has(listenerHost);
    if (!WILDCARDS.has(listenerHost)) return false;
    return isLoopback(host) || localAddresses().has(host);
  };

  return {
    addListener({ address, port }, kind) {
      listeners.push({ host: normalizeHost(address), port, kind });
      ports.add(port);
    },
    isListenerPort: (port) => ports.has(port),
    listenerAt(target) {
      if (!ports.has(target.port)) return undefined;
      const host = normalizeHost(target.host);
      return listeners.find((l) => l.port === target.port && reaches(l.host, host))?.kind;
    },
    listenerPorts: () => [...ports],
    trackOpened(socket, dialled, boundTo) {
      // A bound socket's local end is its bound address; otherwise a non-loopback IPv4 destination's is not loopback.
      if (neverLoopback(boundTo ?? dialled.host)) return;
      const { localAddress, localPort } = socket;
      // Only a loopback source can pass the admin's loopback check; others need no record.
      if (localAddress === undefined || localPort === undefined) return;
      const local = normalizeHost(localAddress);
      if (!isLoopback(local)) return;
      const key = `${local}|${localPort}`;
      open.set(key, (open.get(key) ?? 0) + 1);
      socket.once("close", () => {
        const left = (open.get(key) ?? 1) - 1;
        if (left > 0) open.set(key, left);
        else open.delete(key);
        rotate();
        recent.add(key);
      });
    },
    openedByProxy(address, port) {
      if (address === undefined || port === undefined) return false;
      rotate();
      const key = keyOf(address, port);
      return open.has(key) || recent.has(key) || older.has(key);
    },
  };
}
