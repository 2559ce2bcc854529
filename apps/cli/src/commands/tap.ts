import type https from "node:https";
import { CliError } from "../errors.ts";
import { streamTap, tapProxy, tapTlsOptions, type TapClientFiles, type TapLine, type TapProxy } from "../mesh/admin-client.ts";
import { workloadOfIdentity } from "../mesh/edges.ts";
import type { Output } from "../output.ts";
import { resolveEdgeSources, type EdgeSourceOptions } from "./edges.ts";

export type { TapClientFiles, TapLine, TapProxy };

/** TLS states `--tls` accepts (the `tls` field of an event). */
export const TAP_TLS_STATES = ["true", "no_identity", "opaque", "disabled"] as const;

export interface TapOptions extends EdgeSourceOptions {
  output: "text" | "json";
  /** Events of a proxy of this workload (`ns/name`) or with a peer of it. */
  workload?: string;
  /** Events of the proxy with this identity or with a peer of it. */
  identity?: string;
  tls?: (typeof TAP_TLS_STATES)[number];
  /** Stop after this many printed events. Default: until `signal` aborts. */
  maxEvents?: number;
  /** Bound of connecting to each proxy, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Aborting stops the stream (the CLI aborts on SIGINT and SIGTERM). */
  signal: AbortSignal;
  /** Proxies' `--tap-addr` listeners, tapped over mutual TLS with `client`. */
  proxyTaps?: string[];
  /** The mesh client certificate for `proxyTaps`. */
  client?: TapClientFiles;
}

/** Whether an event passes `--workload`, `--identity` and `--tls`. */
export function tapMatches(line: TapLine, filter: { workload?: string; identity?: string; tls?: string }): boolean {
  if (filter.tls !== undefined && line.tls !== filter.tls) return false;
  if (filter.identity !== undefined && line.proxy.identity !== filter.identity && line.peerId !== filter.identity) return false;
  if (filter.workload !== undefined) {
    const peerWorkload = line.peerId === undefined ? null : workloadOfIdentity(line.peerId);
    if (line.proxy.workload !== filter.workload && peerWorkload !== filter.workload) return false;
  }
  return true;
}

const text = (value: unknown): string => (typeof value === "string" || typeof value === "number" || typeof value === "boolean" ? String(value) : "-");

/** One line per event for a terminal. */
export function formatTapLine(line: TapLine): string {
  const time = new Date(line.timeMs).toISOString().slice(11, 23);
  const who = line.proxy.workload ?? line.proxy.admin;
  const secured = line.tls === undefined ? "" : ` tls=${line.tls === "" ? "-" : line.tls}${line.peerId === undefined ? "" : ` id=${line.peerId}`}${line["noTlsReason"] === undefined ? "" : ` reason=${text(line["noTlsReason"])}`}`;
  switch (line.type) {
    case "connection":
    {
      const policy = line["policy"] as { allow?: boolean; reason?: string; server?: { kind?: string; name?: string } } | undefined;
      const decided = policy === undefined ? "" : ` policy=${policy.allow === true ? "allow" : "deny"}:${text(policy.reason)} server=${text(policy.server?.kind)}/${text(policy.server?.name)}`;
      return `${time} ${who} ${line.direction} conn ${text(line["phase"])} ${text(line["peer"])} peer=${text(line["peerAddr"])} target=${text(line["targetAddr"])}${secured}${decided} read=${text(line["bytesRead"])}B written=${text(line["bytesWritten"])}B duration=${text(line["durationMs"])}ms`;
    }
    case "request": {
      const status = line["status"] === undefined ? `error=${text(line["error"])}` : `status=${text(line["status"])}${line["error"] === undefined ? "" : ` error=${text(line["error"])}`}`;
      return `${time} ${who} ${line.direction} req ${text(line["method"])} ${text(line["authority"])}${text(line["path"]) === "-" ? "" : text(line["path"])} target=${text(line["targetAddr"])}${secured} ${status} ${text(line["classification"])} latency=${text(line["latencyMs"])}ms`;
    }
    case "authz": {
      const server = line["server"] as { kind?: string; name?: string } | undefined;
      const authz = line["authz"] as { kind?: string; name?: string } | undefined;
      return `${time} ${who} ${line.direction} authz ${text(line["proto"])} ${line["allow"] === true ? "allow" : "deny"} target=${text(line["targetAddr"])} server=${text(server?.kind)}/${text(server?.name)}${authz === undefined ? "" : ` authz=${text(authz.kind)}/${text(authz.name)}`} reason=${text(line["reason"])}`;
    }
  }
}

/**
 * `meshtls tap`: the live events of every proxy named, one line each (or
 * JSON with `-o json`), filtered. Ends when `signal` aborts, after
 * `maxEvents`, or when every stream has ended; `CliError` ERR_CONNECT when
 * no proxy could be tapped.
 */
export async function runTap(options: TapOptions, output: Output): Promise<{ events: number }> {
  const proxyTaps = options.proxyTaps ?? [];
  if (proxyTaps.length > 0 && options.client === undefined) throw new CliError("ERR_USAGE", "--proxy-tap needs --cert, --key and --ca (a mesh client certificate the proxy's --tap-allow names)");
  const tlsOptions = options.client === undefined ? undefined : await tapTlsOptions(options.client);
  const local = options.proxyAdmins.length > 0 || options.registryFile !== undefined || options.kubernetes !== undefined || proxyTaps.length === 0;
  const { admins } = local ? await resolveEdgeSources(options) : { admins: [] };
  const connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  options.signal.addEventListener("abort", onAbort, { once: true });
  let events = 0;
  const filter = { ...(options.workload === undefined ? {} : { workload: options.workload }), ...(options.identity === undefined ? {} : { identity: options.identity }), ...(options.tls === undefined ? {} : { tls: options.tls }) };
  const onEvent = (line: TapLine): void => {
    if (stop.signal.aborted || !tapMatches(line, filter)) return;
    events++;
    output.out(options.output === "json" ? JSON.stringify(line) : formatTapLine(line));
    if (options.maxEvents !== undefined && events >= options.maxEvents) stop.abort();
  };
  try {
    const proxies: Array<{ proxy: TapProxy; tls?: https.RequestOptions }> = [
      ...(await Promise.all(admins.map(async (admin) => ({ proxy: await tapProxy(admin, connectTimeoutMs) })))),
      ...proxyTaps.map((address) => ({ proxy: { admin: address, identity: null, workload: null }, ...(tlsOptions === undefined ? {} : { tls: tlsOptions }) })),
    ];
    const results = await Promise.all(
      proxies.map(({ proxy, tls: clientTls }) =>
        streamTap(proxy, {
          connectTimeoutMs,
          ...(clientTls === undefined ? {} : { tls: clientTls }),
          signal: stop.signal,
          // For scripts that wait for the stream before making traffic.
          onOpen: () => output.err(JSON.stringify({ msg: "tapping", admin: proxy.admin, workload: proxy.workload })),
          onEvent,
        }).then(
          () => true,
          (reason: unknown) => {
            output.err(`meshtls: ${reason instanceof Error ? reason.message : String(reason)}`);
            return false;
          },
        ),
      ),
    );
    if (!results.includes(true)) throw new CliError("ERR_CONNECT", "no proxy could be tapped");
  } finally {
    options.signal.removeEventListener("abort", onAbort);
  }
  return { events };
}
