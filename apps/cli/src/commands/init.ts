import { applyRules, binaryNames, buildRules, formatCommands, formatRemoveCommands, removeRules, TransparentError } from "@meshtls/transparent";
import type { FamilyReport, IptablesMode, RedirectOptions } from "@meshtls/transparent";
import { CliError } from "../errors.ts";
import type { Output } from "../output.ts";

export interface InitOptions extends RedirectOptions {
  /** `nft` (default; falls back to `plain`, then `legacy`), `legacy` or `plain`. */
  mode: IptablesMode;
  /** Also the IPv6 rules (ip6tables). */
  ipv6: boolean;
  /** Print the iptables commands instead of running anything. */
  dryRun: boolean;
  /** Remove the rules and chains instead of installing them. */
  remove: boolean;
}

function report(reports: FamilyReport[], changedText: string, sameText: string, output: Output): void {
  for (const r of reports) {
    output.out(`IPv${r.family} (${r.restore}): ${r.changed ? changedText : sameText}`);
  }
}

/**
 * `meshtls init`: the init container's job in transparent mode. Installs (or
 * with `remove` deletes) the nat rules of Linkerd's proxy-init in the current
 * network namespace, IPv4 then IPv6, with the proxy's redirect-check rule
 * first in PROXY_INIT_OUTPUT when `redirectCheckProbe` is set (the command's
 * default); a second run changes nothing. With
 * `dryRun` it prints the commands proxy-init would run on an empty table and
 * touches nothing (no iptables needed).
 */
export async function runInit(options: InitOptions, output: Output): Promise<void> {
  const families: (4 | 6)[] = options.ipv6 ? [4, 6] : [4];
  try {
    if (options.dryRun) {
      for (const family of families) {
        const binary = binaryNames(options.mode, family).iptables;
        output.out((options.remove ? formatRemoveCommands(binary) : formatCommands(buildRules(options, family), binary)).trimEnd());
      }
      return;
    }
    if (options.remove) {
      report(await removeRules({ mode: options.mode, ipv6: options.ipv6 }), "removed the proxy-init rules and chains", "no proxy-init rules to remove", output);
    } else {
      report(await applyRules({ ...options }), "installed the proxy-init rules", "the proxy-init rules were already installed; nothing changed", output);
    }
  } catch (error) {
    if (error instanceof TransparentError) {
      throw new CliError(error.code === "ERR_TRANSPARENT_OPTIONS" ? "ERR_USAGE" : "ERR_IPTABLES", `${error.message} (${error.code})`, { cause: error });
    }
    throw error;
  }
}
