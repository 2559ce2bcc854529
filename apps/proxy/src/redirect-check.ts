import { createRedirectCheck } from "@meshtls/transparent";
import type { RedirectCheckResult } from "@meshtls/transparent";
import type { AdminReadiness } from "@meshtls/runtime";
import type { Logger, TransparentIntercept } from "@meshtls/proxy-core";
import { formatHostPort } from "@meshtls/proxy-core";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import type { Config } from "./config.js";

/** The redirect check as the proxy runs it: the outbound listener's intercept, a `/ready` condition, and a stop. */
export interface ProxyRedirectCheck {
  intercept: TransparentIntercept;
  ready: () => AdminReadiness;
  /** Checks now and every interval: once the outbound listener is up. */
  start: () => void;
  stop: () => void;
}

/**
 * Transparent mode's check of the outbound redirect (`--redirect-check-*`):
 * the proxy dials `--redirect-check-addr` itself, and `meshtls init`'s probe
 * rule (first in PROXY_INIT_OUTPUT, before the proxy's UID is excluded)
 * redirects it to `--outbound`. With `transparent_redirect_ok{direction="outbound"}`
 * 1/0, `transparent_redirect_check_failures_total`, a warning with
 * `ERR_REDIRECT_MISSING` at each failed check, and `/ready` 503 while the
 * redirect is missing (and before the first check ends).
 *
 * With the check off (interval 0, the default: Linkerd's proxy-init adds no
 * probe rule) connections to the probe address are still answered here and
 * never forwarded: behind `meshtls init`'s rules the proxy's own dial there
 * would be redirected back to itself, a loop.
 */
export function createProxyRedirectCheck(options: { config: Config; registry: Registry; logger: Logger }): ProxyRedirectCheck {
  const { config, registry, logger } = options;
  const { intervalMs, probe } = config.redirectCheck;
  const probeAddress = formatHostPort(probe.host, probe.port);
  let state: "pending" | "ok" | "missing" = "pending";
  let reason = "";
  let onResult: ((result: RedirectCheckResult) => void) | undefined;
  if (intervalMs > 0) {
    const labels = { direction: "outbound" };
    const ok = new Gauge({ name: "transparent_redirect_ok", help: "1 while the transparent redirect check's last probe reached the proxy's listener, 0 while it did not", labelNames: ["direction"], registers: [registry] });
    const failures = new Counter({ name: "transparent_redirect_check_failures_total", help: "Redirect checks whose probe did not reach the proxy's listener", labelNames: ["direction"], registers: [registry] });
    onResult = (result) => {
      if (result.ok) {
        if (state !== "ok") logger.info({ probe: probeAddress, elapsedMs: result.elapsedMs }, "transparent redirect check: the outbound redirect is in place");
        state = "ok";
        ok.set(labels, 1);
        return;
      }
      const { code, message } = result.error;
      state = "missing";
      reason = `${code}: ${message}`;
      ok.set(labels, 0);
      failures.inc(labels);
      logger.warn({ code, probe: probeAddress, err: message }, "transparent redirect check failed: connections may be bypassing the proxy");
    };
  }
  const check = createRedirectCheck({
    probe: { host: probe.host, port: probe.port },
    outboundPort: config.outbound.port,
    intervalMs,
    ...(onResult === undefined ? {} : { onResult }),
  });
  return {
    intercept: (socket, dst) => check.intercept(socket, { host: dst.address, port: dst.port }),
    ready: () => (state === "missing" ? { ok: false, reason } : state === "pending" && intervalMs > 0 ? { ok: false, reason: "the transparent redirect check has not finished yet" } : { ok: true }),
    start: () => check.start(),
    stop: () => check.stop(),
  };
}
