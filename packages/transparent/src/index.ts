export { buildRules, splitMultiport, MULTIPORT_LIMIT, OUTPUT_CHAIN, REDIRECT_CHAIN, REDIRECT_CHECK_COMMENT } from "./rules.ts";
export type { RedirectOptions, Rule, RuleSet } from "./rules.ts";
export { applyRules, removeRules } from "./apply.ts";
export type { FamilyReport, IptablesOptions } from "./apply.ts";
export { expectedSaveLines, formatCommands, formatRemoveCommands, saveLine } from "./render.ts";
export { binaryNames, findBinaries } from "./iptables.ts";
export type { CommandRunner, IptablesBinaries, IptablesMode } from "./iptables.ts";
export { createRedirectCheck } from "./redirect-check.ts";
export type { CreateRedirectCheckOptions, ProbeAddress, ProbeDialer, RedirectCheck, RedirectCheckResult } from "./redirect-check.ts";
export { TransparentError } from "./errors.ts";
export type { TransparentErrorCode } from "./errors.ts";

// For integrators: the restore inputs and the save-output reader.
export { natLines, planInstall, planRemove } from "./apply.ts";
