// One Logger for every meshtls library: @meshtls/runtime's.
export { noopLogger } from "@meshtls/runtime";
export type { Logger } from "@meshtls/runtime";
