import { TransparentError } from "./errors.ts";
import { findBinaries, spawnCommand } from "./iptables.ts";
import type { CommandRunner, IptablesBinaries, IptablesMode } from "./iptables.ts";
import { saveLine } from "./render.ts";
import { buildRules, OUTPUT_CHAIN, REDIRECT_CHAIN, resolveOptions } from "./rules.ts";
import type { RedirectOptions, RuleSet } from "./rules.ts";

/** Where and how to install or remove the rules. */
export interface IptablesOptions {
  /** Default `nft`, falling back to `plain` then `legacy` when its binaries are missing. */
  mode?: IptablesMode;
  /** Also install or remove the IPv6 rules with ip6tables. Default true. */
  ipv6?: boolean;
  /** Runs the iptables binaries; default spawns them. */
  run?: CommandRunner;
  /** Environment whose PATH is searched for the binaries; default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** What happened to one family's nat table. */
export interface FamilyReport {
  family: 4 | 6;
  /** The mode actually used (after fallbacks) and its restore binary. */
  mode: IptablesMode;
  restore: string;
  /** False when the nat table reads the same afterwards (a second `meshtls init`). */
  changed: boolean;
  /** `iptables-save -t nat` after the change, without comments and counters. */
  after: string[];
}

const PREROUTING_JUMP = new RegExp(`^-A PREROUTING (.+ )?-j ${REDIRECT_CHAIN}( |$)`, "m");
const OUTPUT_JUMP = new RegExp(`^-A OUTPUT (.+ )?-j ${OUTPUT_CHAIN}( |$)`, "m");

/** The nat table's lines of `iptables-save` output, without comments and with counters zeroed (nft prints none, legacy does). */
export function natLines(saved: string): string[] {
  const lines: string[] = [];
  let inNat = false;
  for (const line of saved.split("\n")) {
    if (line.startsWith("*")) inNat = line === "*nat";
    else if (inNat && line !== "" && line !== "COMMIT" && !line.startsWith("#")) lines.push(line.replace(/\[\d+:\d+\]$/, "[0:0]"));
  }
  return lines;
}

/**
 * `iptables-restore --noflush` input installing `rules` over the nat table
 * `saved` holds: declaring our chains creates them or flushes them, and each
 * jump is added only when absent, so a second install changes nothing (the
 * same check as proxy-init's, in one atomic commit instead of one command per rule).
 */
export function planInstall(saved: string, rules: RuleSet): string {
  const lines = ["*nat", `:${REDIRECT_CHAIN} - [0:0]`, `:${OUTPUT_CHAIN} - [0:0]`];
  const current = natLines(saved).join("\n");
  for (const rule of rules.inbound) {
    if (rule.chain === "PREROUTING" && PREROUTING_JUMP.test(current)) continue;
    lines.push(saveLine(rule));
  }
  for (const rule of rules.outbound) {
    if (rule.chain === "OUTPUT" && OUTPUT_JUMP.test(current)) continue;
    lines.push(saveLine(rule));
  }
  lines.push("COMMIT");
  return `${lines.join("\n")}\n`;
}

/**
 * `iptables-restore --noflush` input removing every jump to our chains and
 * the chains themselves (proxy-init's cleanup), or undefined when none is there.
 */
export function planRemove(saved: string): string | undefined {
  const current = natLines(saved);
  const jump = new RegExp(`^-A ((?:PREROUTING|OUTPUT) (?:.+ )?-j (?:${REDIRECT_CHAIN}|${OUTPUT_CHAIN}))( .*)?$`);
  const lines: string[] = [];
  for (const line of current) {
    const match = jump.exec(line);
    if (match !== null) lines.push(`-D ${match[1]}${match[2] ?? ""}`);
  }
  for (const chain of [OUTPUT_CHAIN, REDIRECT_CHAIN]) {
    if (current.some((line) => line.startsWith(`:${chain} `))) lines.push(`-F ${chain}`, `-X ${chain}`);
  }
  return lines.length === 0 ? undefined : `${["*nat", ...lines, "COMMIT"].join("\n")}\n`;
}

async function check(run: CommandRunner, command: string, args: string[], stdin?: string): Promise<string> {
  const result = await run(command, args, stdin);
  if (result.code !== 0) {
    throw new TransparentError("ERR_TRANSPARENT_IPTABLES", `${[command, ...args].join(" ")} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
  return result.stdout;
}

async function eachFamily(options: IptablesOptions, change: (saved: string, family: 4 | 6) => string | undefined): Promise<FamilyReport[]> {
  const run = options.run ?? spawnCommand;
  const families: (4 | 6)[] = options.ipv6 === false ? [4] : [4, 6];
  const binaries: IptablesBinaries[] = families.map((family) => findBinaries(options.mode ?? "nft", family, options.env ?? process.env));
  const reports: FamilyReport[] = [];
  for (const bin of binaries) {
    const before = await check(run, bin.save, ["-t", "nat"]);
    const input = change(before, bin.family);
    if (input !== undefined) await check(run, bin.restore, ["--noflush"], input);
    const after = input === undefined ? before : await check(run, bin.save, ["-t", "nat"]);
    const [was, is] = [natLines(before), natLines(after)];
    reports.push({ family: bin.family, mode: bin.mode, restore: bin.restore, changed: was.join("\n") !== is.join("\n"), after: is });
  }
  return reports;
}

/**
 * Installs the nat rules (IPv4, then IPv6 unless `ipv6: false`), idempotently.
 * Throws `ERR_TRANSPARENT_OPTIONS` before touching anything when an option is
 * unusable, `ERR_TRANSPARENT_NO_IPTABLES` or `ERR_TRANSPARENT_IPTABLES` otherwise.
 */
export async function applyRules(options: RedirectOptions & IptablesOptions = {}): Promise<FamilyReport[]> {
  resolveOptions(options);
  return eachFamily(options, (saved, family) => planInstall(saved, buildRules(options, family)));
}

/** Removes every rule and chain {@link applyRules} installs; a table without them is left as it is. */
export async function removeRules(options: IptablesOptions = {}): Promise<FamilyReport[]> {
  return eachFamily(options, (saved) => planRemove(saved));
}
