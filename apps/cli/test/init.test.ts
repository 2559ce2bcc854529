// `meshtls init`: the dry-run text, and the real rules in network namespaces the
// test makes (root, iptables and iproute2; .ci/run installs them).
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliBin, run, runCli } from "./helpers.ts";

const PREFIX = "mtls-init-";
const ip = (...args: string[]): string => execFileSync("ip", args, { encoding: "utf8", timeout: 30_000 });
const namespaces = (): string[] => ip("netns", "list").split("\n").map((line) => line.split(" ")[0] ?? "").filter((name) => name.startsWith(PREFIX));

beforeAll(() => {
  for (const name of namespaces()) ip("netns", "del", name); // leftovers of a killed run
});
afterAll(() => {
  for (const name of namespaces().filter((name) => name.endsWith(`-${process.pid}`))) ip("netns", "del", name);
});

const dryRunV4 = [
  "iptables-nft -t nat -N PROXY_INIT_REDIRECT",
  "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports 4190,4191 -j RETURN -m comment --comment proxy-init/ignore-port-4190,4191",
  "iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port 4143 -m comment --comment proxy-init/redirect-all-incoming-to-proxy-port",
  "iptables-nft -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
  "iptables-nft -t nat -N PROXY_INIT_OUTPUT",
  "iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -d 1.1.1.1/32 --destination-port 20001 -j REDIRECT --to-port 4140 -m comment --comment meshtls/redirect-check",
  "iptables-nft -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment proxy-init/ignore-proxy-user-id",
  "iptables-nft -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment proxy-init/ignore-loopback",
  "iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port 4140 -m comment --comment proxy-init/redirect-all-outgoing-to-proxy-port",
  "iptables-nft -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
];

// What iptables-save prints once the default rules are in (both families alike).
const savedDefaults = [
  ":PREROUTING ACCEPT [0:0]",
  ":INPUT ACCEPT [0:0]",
  ":OUTPUT ACCEPT [0:0]",
  ":POSTROUTING ACCEPT [0:0]",
  ":PROXY_INIT_OUTPUT - [0:0]",
  ":PROXY_INIT_REDIRECT - [0:0]",
  '-A PREROUTING -m comment --comment "proxy-init/install-proxy-init-prerouting" -j PROXY_INIT_REDIRECT',
  '-A OUTPUT -m comment --comment "proxy-init/install-proxy-init-output" -j PROXY_INIT_OUTPUT',
  '-A PROXY_INIT_OUTPUT -d 1.1.1.1/32 -p tcp -m tcp --dport 20001 -m comment --comment "meshtls/redirect-check" -j REDIRECT --to-ports 4140',
  '-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "proxy-init/ignore-proxy-user-id" -j RETURN',
  '-A PROXY_INIT_OUTPUT -o lo -m comment --comment "proxy-init/ignore-loopback" -j RETURN',
  '-A PROXY_INIT_OUTPUT -p tcp -m comment --comment "proxy-init/redirect-all-outgoing-to-proxy-port" -j REDIRECT --to-ports 4140',
  '-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -m comment --comment "proxy-init/ignore-port-4190,4191" -j RETURN',
  '-A PROXY_INIT_REDIRECT -p tcp -m comment --comment "proxy-init/redirect-all-incoming-to-proxy-port" -j REDIRECT --to-ports 4143',
];
const builtIn = savedDefaults.slice(0, 4);
// The redirect check's rule goes only to its probe's family (1.1.1.1: IPv4).
const isProbeRule = (line: string): boolean => line.includes("meshtls/redirect-check");
const savedDefaultsV6 = savedDefaults.filter((line) => !isProbeRule(line));

describe("meshtls init --dry-run", () => {
  it("prints proxy-init's commands and the redirect check's rule (IPv4 only) for IPv4 and IPv6 and changes nothing", async () => {
    const result = await runCli(["init", "--dry-run"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`${[...dryRunV4, ...dryRunV4.filter((line) => !isProbeRule(line)).map((line) => line.replace(/^iptables/, "ip6tables"))].join("\n")}\n`);
  });

  it("--redirect-check-addr moves the probe rule; --no-redirect-check prints proxy-init's rules exactly", async () => {
    const moved = await runCli(["init", "--dry-run", "--no-ipv6", "--redirect-check-addr", "10.77.0.99:20002", "--outgoing-proxy-port", "5140"]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout.split("\n").filter(isProbeRule)).toEqual([
      "iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -d 10.77.0.99/32 --destination-port 20002 -j REDIRECT --to-port 5140 -m comment --comment meshtls/redirect-check",
    ]);
    const exact = await runCli(["init", "--dry-run", "--no-ipv6", "--no-redirect-check"]);
    expect(exact.stdout).toBe(`${dryRunV4.filter((line) => !isProbeRule(line)).join("\n")}\n`);
  });

  it("names the chosen binaries, splits long port lists and prints the removal", async () => {
    const ports = Array.from({ length: 16 }, (_, i) => 7000 + i).join(",");
    const result = await runCli(["init", "--dry-run", "--no-ipv6", "--iptables-mode", "legacy", "--outbound-ports-to-ignore", ports, "--subnets-to-ignore", "192.0.2.0/24,fd00::/8"]);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines.every((line) => line.startsWith("iptables-legacy -t nat "))).toBe(true);
    expect(lines.filter((line) => line.includes("ignore-port-70"))).toHaveLength(2);
    expect(lines.filter((line) => line.includes("ignore-subnet"))).toEqual([
      "iptables-legacy -t nat -A PROXY_INIT_REDIRECT -p all -j RETURN -s 192.0.2.0/24 -m comment --comment proxy-init/ignore-subnet-192.0.2.0/24",
    ]);
    const removal = await runCli(["init", "--dry-run", "--remove", "--no-ipv6"]);
    expect(removal.stdout.trim().split("\n")).toEqual([
      "iptables-nft -t nat -D PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment proxy-init/install-proxy-init-prerouting",
      "iptables-nft -t nat -D OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment proxy-init/install-proxy-init-output",
      "iptables-nft -t nat -F PROXY_INIT_OUTPUT",
      "iptables-nft -t nat -F PROXY_INIT_REDIRECT",
      "iptables-nft -t nat -X PROXY_INIT_OUTPUT",
      "iptables-nft -t nat -X PROXY_INIT_REDIRECT",
    ]);
  });

  it.each([
    [["--inbound-ports-to-ignore", "80:70"], /end is below its start \(ERR_TRANSPARENT_OPTIONS\)/],
    [["--subnets-to-ignore", "10.0.0.0/40"], /not a CIDR/],
    [["--proxy-uid", "root"], /--proxy-uid: "root" is not a number/],
    [["--iptables-mode", "ipfw"], /--iptables-mode must be nft, legacy or plain/],
    [["--redirect-check-addr", "example.com:20001"], /redirect check address: "example.com" is not an IP address/],
    [["--redirect-check-addr", "1.1.1.1"], /--redirect-check-addr: "1.1.1.1" is not ip:port/],
  ])("refuses %j with exit 2", async (args, message) => {
    const result = await runCli(["init", "--dry-run", ...args]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
  });
});

describe.each(["nft", "legacy"])("meshtls init --iptables-mode %s in a fresh network namespace", (mode) => {
  const ns = `${PREFIX}${mode}-${process.pid}`;
  const init = (...args: string[]) => run("ip", ["netns", "exec", ns, process.execPath, cliBin, "init", "--iptables-mode", mode, ...args]);
  const save = (family: 4 | 6): string[] =>
    ip("netns", "exec", ns, `${family === 4 ? "iptables" : "ip6tables"}-${mode}-save`, "-t", "nat")
      .split("\n")
      .filter((line) => line !== "" && !line.startsWith("#") && !line.startsWith("*") && line !== "COMMIT");

  beforeAll(() => ip("netns", "add", ns));

  it("installs the rules; a second run changes nothing; --remove leaves nothing", async () => {
    const first = await init();
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^IPv4 \\(.*iptables-${mode}-restore\\): installed the proxy-init rules\\nIPv6 \\(.*ip6tables-${mode}-restore\\): installed`));
    expect(save(4)).toEqual(savedDefaults);
    expect(save(6)).toEqual(savedDefaultsV6);

    const second = await init();
    expect(second.code).toBe(0);
    expect(second.stdout.match(/already installed; nothing changed/g)).toHaveLength(2);
    expect(save(4)).toEqual(savedDefaults);
    expect(save(6)).toEqual(savedDefaultsV6);

    const removed = await init("--remove");
    expect(removed.stdout.match(/removed the proxy-init rules and chains/g)).toHaveLength(2);
    expect(save(4)).toEqual(builtIn);
    expect(save(6)).toEqual(builtIn);
    expect((await init("--remove")).stdout.match(/no proxy-init rules to remove/g)).toHaveLength(2);
  });
});
