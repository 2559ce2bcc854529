export * from "../src/index.ts";
export { natLines } from "../src/apply.ts";
export { spawnCommand as spawnCommandForTests } from "../src/iptables.ts";
