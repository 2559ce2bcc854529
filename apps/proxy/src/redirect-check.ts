import { createRedirectCheck, spawnProbeDialer } from "@meshtls/transparent";
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
 * Transparent mode's check of the outbound redirect (`--redirect-check-*`),
 * with `transparent_redirect_ok{direction="outbound"}` 1/0,
 * `transparent_redirect_check_failures_total`, a warning with
 * `ERR_REDIRECT_MISSING` at each failed check, and `/ready` 503 while the
 * redirect is missing (and before the first check ends). When the probe
 * cannot be started as its user (no `CAP_SETUID`/`CAP_SETGID`) the check
 * stops, says so once (`ERR_REDIRECT_CHECK_UNAVAILABLE`), and leaves `/ready` alone.
 */
export function createProxyRedirectCheck(options: { config: Config; registry: Registry; logger: Logger; node?: string }): ProxyRedirectCheck {
  const { config, registry, logger } = options;
  const { intervalMs, probe, uid, gid } = config.redirectCheck;
  const labels = { direction: "outbound" };
  const ok = new Gauge({ name: "transparent_redirect_ok", help: "1 while the transparent redirect check's last probe reached the proxy's listener, 0 while it did not", labelNames: ["direction"], registers: [registry] });
  const failures = new Counter({ name: "transparent_redirect_check_failures_total", help: "Redirect checks whose probe did not reach the proxy's listener", labelNames: ["direction"], registers: [registry] });
  let state: "pending" | "ok" | "missing" | "unavailable" = "pending";
  let reason = "";
  const check = createRedirectCheck({
    probe: { host: probe.host, port: probe.port },
    outboundPort: config.outbound.port,
    intervalMs,
    dial: spawnProbeDialer({ uid, gid, ...(options.node === undefined ? {} : { node: options.node }) }),
    onResult(result: RedirectCheckResult) {
      const probeAddress = formatHostPort(probe.host, probe.port);
      if (result.ok) {
        if (state !== "ok") logger.info({ probe: probeAddress, elapsedMs: result.elapsedMs }, "transparent redirect check: the outbound redirect is in place");
        state = "ok";
        ok.set(labels, 1);
        return;
      }
      const { code, message } = result.error;
      if (code === "ERR_REDIRECT_CHECK_UNAVAILABLE") {
        state = "unavailable";
        check.stop();
        logger.warn({ code, err: message }, "transparent redirect check is off: the probe cannot run as its user");
        return;
      }
      state = "missing";
      reason = `${code}: ${message}`;
      ok.set(labels, 0);
      failures.inc(labels);
      logger.warn({ code, probe: probeAddress, err: message }, "transparent redirect check failed: connections may be bypassing the proxy");
    },
  });
  return {
    intercept: (socket, dst) => check.intercept(socket, { host: dst.address, port: dst.port }),
    ready: () =>
      state === "missing" ? { ok: false, reason } : state === "pending" && intervalMs > 0 ? { ok: false, reason: "the transparent redirect check has not finished yet" } : { ok: true },
    start: () => check.start(),
    stop: () => check.stop(),
  };
}
