import type { Rule, RuleSet } from "./rules.ts";
import { OUTPUT_CHAIN, REDIRECT_CHAIN } from "./rules.ts";

const comment = (rule: Rule): string => rule.comment ?? `proxy-init/${rule.name}`;

/** The arguments proxy-init passes for a rule after `-t nat -A <chain>`, in its order. */
export function commandArgs(rule: Rule): string[] {
  const args: string[] = [];
  if (rule.protocol !== undefined) args.push("-p", rule.protocol);
  if (rule.destination !== undefined) args.push("-d", rule.destination);
  if (rule.dports !== undefined) args.push("--match", "multiport", "--dports", rule.dports.join(","));
  if (rule.dport !== undefined) args.push("--destination-port", String(rule.dport));
  if (rule.uidOwner !== undefined) args.push("-m", "owner", "--uid-owner", String(rule.uidOwner));
  if (rule.gidOwner !== undefined) args.push("-m", "owner", "--gid-owner", String(rule.gidOwner));
  if (rule.outInterface !== undefined) args.push("-o", rule.outInterface);
  args.push("-j", rule.target);
  if (rule.toPort !== undefined) args.push("--to-port", String(rule.toPort));
  if (rule.source !== undefined) args.push("-s", rule.source);
  args.push("-m", "comment", "--comment", comment(rule));
  return args;
}

/** The rule as `iptables-save` prints it (and `iptables-restore` reads it): addresses, interface, protocol, matches, target. */
export function saveLine(rule: Rule): string {
  const parts = [`-A ${rule.chain}`];
  if (rule.source !== undefined) parts.push(`-s ${rule.source}`);
  if (rule.destination !== undefined) parts.push(`-d ${rule.destination}`);
  if (rule.outInterface !== undefined) parts.push(`-o ${rule.outInterface}`);
  if (rule.protocol !== undefined && rule.protocol !== "all") parts.push(`-p ${rule.protocol}`);
  if (rule.dport !== undefined) parts.push(`-m tcp --dport ${rule.dport}`);
  if (rule.dports !== undefined) parts.push(`-m multiport --dports ${rule.dports.join(",")}`);
  if (rule.uidOwner !== undefined) parts.push(`-m owner --uid-owner ${rule.uidOwner}`);
  if (rule.gidOwner !== undefined) parts.push(`-m owner --gid-owner ${rule.gidOwner}`);
  parts.push(`-m comment --comment "${comment(rule)}"`, `-j ${rule.target}`);
  if (rule.toPort !== undefined) parts.push(`--to-ports ${rule.toPort}`);
  return parts.join(" ");
}

const shellWord = (word: string): string => (/^[A-Za-z0-9_./:,=+-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`);

/**
 * The commands proxy-init would run on a pod with no rules yet, one a line,
 * `binary` first (`iptables-nft`, `ip6tables-legacy`, …): `--dry-run`'s text.
 */
export function formatCommands(rules: RuleSet, binary: string): string {
  const line = (args: string[]): string => [binary, "-t", "nat", ...args].map(shellWord).join(" ");
  const lines = [line(["-N", REDIRECT_CHAIN])];
  for (const rule of rules.inbound) lines.push(line(["-A", rule.chain, ...commandArgs(rule)]));
  lines.push(line(["-N", OUTPUT_CHAIN]));
  for (const rule of rules.outbound) lines.push(line(["-A", rule.chain, ...commandArgs(rule)]));
  return `${lines.join("\n")}\n`;
}

/** The nat table lines `iptables-save -t nat` shows for these rules once installed on an empty table, in its order. */
export function expectedSaveLines(rules: RuleSet): string[] {
  const all = [...rules.inbound, ...rules.outbound];
  const of = (chain: string): string[] => all.filter((rule) => rule.chain === chain).map(saveLine);
  return [
    `:${OUTPUT_CHAIN} - [0:0]`,
    `:${REDIRECT_CHAIN} - [0:0]`,
    ...of("PREROUTING"),
    ...of("OUTPUT"),
    ...of(OUTPUT_CHAIN),
    ...of(REDIRECT_CHAIN),
  ];
}

/** The commands proxy-init's cleanup runs (`meshtls init --remove --dry-run`). */
export function formatRemoveCommands(binary: string): string {
  const line = (args: string[]): string => [binary, "-t", "nat", ...args].map(shellWord).join(" ");
  return `${[
    line(["-D", "PREROUTING", "-j", REDIRECT_CHAIN, "-m", "comment", "--comment", "proxy-init/install-proxy-init-prerouting"]),
    line(["-D", "OUTPUT", "-j", OUTPUT_CHAIN, "-m", "comment", "--comment", "proxy-init/install-proxy-init-output"]),
    line(["-F", OUTPUT_CHAIN]),
    line(["-F", REDIRECT_CHAIN]),
    line(["-X", OUTPUT_CHAIN]),
    line(["-X", REDIRECT_CHAIN]),
  ].join("\n")}\n`;
}
