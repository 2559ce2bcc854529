/**
 * What the outbound stack knows of one connection the application opened:
 * built by the listener that accepted it, read by discovery and connect.
 */
export interface OutboundTarget {
  /** `name:port` or `ip:port`, normalized (`normalizeAuthority`). */
  authority: string;
  /** The listener that accepted the application's connection: the HTTP proxy (CONNECT or absolute URI), a fixed route, or the transparent listener (the original destination). */
  listener: "proxy" | "route" | "transparent";
  /** The application's address as the socket reports it. */
  client: { address: string; port: number };
}
