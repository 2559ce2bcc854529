// applyRules / removeRules against real iptables in network namespaces made for
// the test (root, iptables and iproute2 needed; .ci/run installs them).
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyRules, buildRules, expectedSaveLines, natLines, removeRules, spawnCommandForTests } from "./helpers.ts";
import type { CommandRunner, IptablesMode } from "../src/index.ts";

const PREFIX = "mtls-ipt-";
const run = (...args: string[]): string => execFileSync("ip", args, { encoding: "utf8", timeout: 30_000 });
const namespaces = (): string[] => run("netns", "list").split("\n").map((line) => line.split(" ")[0] ?? "").filter((name) => name.startsWith(PREFIX));

beforeAll(() => {
  for (const name of namespaces()) run("netns", "del", name); // leftovers of a killed run
});
afterAll(() => {
  for (const name of namespaces().filter((name) => name.endsWith(`-${process.pid}`))) run("netns", "del", name);
});

const BUILT_IN = [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"];
const options = {
  proxyUid: 2102,
  proxyGid: 2103,
  inboundPortsToIgnore: ["4190", "4191", "4567:4568"],
  outboundPortsToIgnore: Array.from({ length: 17 }, (_, i) => String(6000 + i)),
  subnetsToIgnore: ["192.0.2.0/24", "fd00:1::/64"],
};

describe.each<IptablesMode>(["nft", "legacy"])("iptables-%s in a fresh network namespace", (mode) => {
  const ns = `${PREFIX}${mode}-${process.pid}`;
  const inNs: CommandRunner = (command, args, stdin) => spawnCommandForTests("ip", ["netns", "exec", ns, command, ...args], stdin);
  const save = (family: 4 | 6): string[] =>
    natLines(run("netns", "exec", ns, `${family === 4 ? "iptables" : "ip6tables"}-${mode}-save`, "-t", "nat"));

  beforeAll(() => run("netns", "add", ns));

  it("installs exactly proxy-init's rules for IPv4 and IPv6", async () => {
    const reports = await applyRules({ ...options, mode, run: inNs });
    expect(reports.map((r) => [r.family, r.mode, r.changed])).toEqual([
      [4, mode, true],
      [6, mode, true],
    ]);
    for (const family of [4, 6] as const) {
      const expected = [...BUILT_IN, ...expectedSaveLines(buildRules(options, family))];
      expect(save(family)).toEqual(expected);
      expect(reports.find((r) => r.family === family)?.after).toEqual(expected);
    }
    expect(save(4).filter((line) => line.includes("ignore-port-6"))).toHaveLength(2); // 17 ports: 15 + 2
  });

  it("changes nothing when run twice", async () => {
    const before = [save(4), save(6)];
    const reports = await applyRules({ ...options, mode, run: inNs });
    expect(reports.map((r) => r.changed)).toEqual([false, false]);
    expect([save(4), save(6)]).toEqual(before);
  });

  it("replaces the chains' rules when the options change, keeping one jump each; the redirect check's rule comes first", async () => {
    const changed = { ...options, outboundPort: 5140, outboundPortsToIgnore: [], redirectCheckProbe: { host: "10.77.0.99", port: 20001 } };
    const reports = await applyRules({ ...changed, mode, run: inNs });
    expect(reports.map((r) => r.changed)).toEqual([true, true]);
    expect(save(4)).toEqual([...BUILT_IN, ...expectedSaveLines(buildRules(changed, 4))]);
    expect(save(4).find((line) => line.startsWith("-A PROXY_INIT_OUTPUT "))).toBe(
      '-A PROXY_INIT_OUTPUT -d 10.77.0.99/32 -p tcp -m tcp --dport 20001 -m comment --comment "meshtls/redirect-check" -j REDIRECT --to-ports 5140',
    );
  });

  it("removes every rule and chain it made, and a second removal changes nothing", async () => {
    expect((await removeRules({ mode, run: inNs })).map((r) => r.changed)).toEqual([true, true]);
    expect(save(4)).toEqual([...BUILT_IN]);
    expect(save(6)).toEqual([...BUILT_IN]);
    expect((await removeRules({ mode, run: inNs })).map((r) => r.changed)).toEqual([false, false]);
  });

  it("leaves other rules alone", async () => {
    run("netns", "exec", ns, `iptables-${mode}`, "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN");
    await applyRules({ ...options, mode, run: inNs, ipv6: false });
    await removeRules({ mode, run: inNs, ipv6: false });
    expect(save(4)).toEqual([...BUILT_IN, "-A OUTPUT -p udp -m udp --dport 53 -j RETURN"]);
  });
});
