import type { Socket } from "node:net";
import { loadNativeAddon } from "./addon.ts";
import type { NativeOrigDst } from "./addon.ts";
import { OrigDstError } from "./errors.ts";

/** Where an accepted connection was going before the kernel redirected it. */
export interface OriginalDestination {
  /** IP address, IPv4 dotted or IPv6 text (never IPv4-mapped). */
  address: string;
  port: number;
  family: 4 | 6;
  /**
   * False when the original destination is the socket's own local address:
   * the client called this listener directly (conntrack still answers for a
   * connection no rule rewrote). A proxy must then handle it as direct and
   * never forward it to itself.
   */
  redirected: boolean;
}

/** Reads original destinations; made once (at start) so a missing addon is reported there. */
export interface OriginalDestinationReader {
  /**
   * The accepted socket's original destination, or `undefined` when the
   * kernel has none (no conntrack entry: nothing was redirected).
   * Throws `ERR_ORIG_DST_SOCKET` for a closed or non-TCP socket.
   */
  read(socket: Socket): OriginalDestination | undefined;
}

const unmapped = (address: string): string => (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address);

function fdOf(socket: Socket): number | undefined {
  // Undocumented but stable since Node 0.x: TCPWrap exposes the descriptor on POSIX.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

function read(addon: NativeOrigDst, socket: Socket): OriginalDestination | undefined {
  const fd = fdOf(socket);
  const remote = socket.remoteAddress;
  const local = socket.localAddress;
  if (fd === undefined || remote === undefined || local === undefined) {
    throw new OrigDstError("ERR_ORIG_DST_SOCKET", "the socket has no file descriptor or addresses (closed, or not a TCP socket)");
  }
  // IPv4 clients, also when accepted on a dual-stack (::) listener as ::ffff:a.b.c.d, use the IPv4 call (orig_dst.rs).
  const family = socket.remoteFamily === "IPv4" || unmapped(remote) !== remote ? 4 : 6;
  let found: { address: string; port: number; family: 4 | 6 };
  try {
    found = addon.originalDestination(fd, family);
  } catch (cause) {
    if ((cause as { code?: unknown }).code === "ENOENT") return undefined;
    throw new OrigDstError("ERR_ORIG_DST_SOCKET", `getsockopt(${family === 4 ? "SO_ORIGINAL_DST" : "IP6T_SO_ORIGINAL_DST"}) failed: ${String(cause)}`, { cause });
  }
  const redirected = !(found.port === socket.localPort && found.address === unmapped(local));
  return { address: found.address, port: found.port, family: found.family, redirected };
}

/**
 * A reader backed by the native addon; throws `ERR_ORIG_DST_UNAVAILABLE`
 * (with the reason) where the addon is not built or the platform is not Linux.
 */
export function createOriginalDestinationReader(): OriginalDestinationReader {
  const addon = loadNativeAddon();
  return { read: (socket) => read(addon, socket) };
}

/** One-off form of {@link OriginalDestinationReader.read}; throws `ERR_ORIG_DST_UNAVAILABLE` like the factory. */
export function originalDestination(socket: Socket): OriginalDestination | undefined {
  return read(loadNativeAddon(), socket);
}
