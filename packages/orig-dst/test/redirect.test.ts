// A real iptables REDIRECT inside a network namespace made for the test: the
// listener reads where each connection was going. Needs root, ip and iptables
// (.ci/run installs them); nothing leaves the namespace.
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const PREFIX = "mtls-od-";
const ns = `${PREFIX}${process.pid}`;
const fixture = fileURLToPath(new URL("./fixtures/report-destinations.ts", import.meta.url));
const run = (command: string, ...args: string[]): string => execFileSync(command, args, { encoding: "utf8", timeout: 30_000 });
const inNs = (command: string, ...args: string[]): string => run("ip", "netns", "exec", ns, command, ...args);

function removeNamespaces(match: (name: string) => boolean): void {
  for (const line of run("ip", "netns", "list").split("\n")) {
    const name = line.split(" ")[0] ?? "";
    if (name.startsWith(PREFIX) && match(name)) run("ip", "netns", "del", name);
  }
}

beforeAll(() => {
  // Leftovers of a run that was killed before its afterAll.
  removeNamespaces(() => true);
  run("ip", "netns", "add", ns);
  inNs("ip", "link", "set", "lo", "up");
  // A veth pair with both ends inside the namespace gives 10.99.0.0/16 and fd00:99::/64 a route;
  // the redirected connections never reach it.
  inNs("ip", "link", "add", "od0", "type", "veth", "peer", "name", "od1");
  inNs("ip", "link", "set", "od0", "up");
  inNs("ip", "link", "set", "od1", "up");
  inNs("ip", "addr", "add", "10.99.0.1/16", "dev", "od0");
  inNs("ip", "addr", "add", "fd00:99::1/64", "dev", "od0", "nodad");
  inNs("iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "10.99.0.7", "--dport", "80", "-j", "REDIRECT", "--to-ports", "4140");
  inNs("ip6tables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "fd00:99::7", "--dport", "9090", "-j", "REDIRECT", "--to-ports", "4140");
});

afterAll(() => {
  removeNamespaces((name) => name === ns);
});

interface Report {
  target: string;
  found: { address: string; port: number; family: number; redirected: boolean } | null;
  local: string;
}

describe("originalDestination in a network namespace", () => {
  it("reads redirected IPv4 and IPv6 destinations, and reports direct connections as not redirected", () => {
    const targets = ["10.99.0.7:80", "[fd00:99::7]:9090", "127.0.0.1:4140", "[::1]:4140", "10.99.0.1:4140"];
    const reports = inNs(process.execPath, fixture, "4140", ...targets)
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Report);
    expect(reports).toEqual([
      { target: "10.99.0.7:80", local: "::ffff:127.0.0.1:4140", found: { address: "10.99.0.7", port: 80, family: 4, redirected: true } },
      { target: "[fd00:99::7]:9090", local: "::1:4140", found: { address: "fd00:99::7", port: 9090, family: 6, redirected: true } },
      { target: "127.0.0.1:4140", local: "::ffff:127.0.0.1:4140", found: { address: "127.0.0.1", port: 4140, family: 4, redirected: false } },
      { target: "[::1]:4140", local: "::1:4140", found: { address: "::1", port: 4140, family: 6, redirected: false } },
      { target: "10.99.0.1:4140", local: "::ffff:10.99.0.1:4140", found: { address: "10.99.0.1", port: 4140, family: 4, redirected: false } },
    ]);
  });
});
