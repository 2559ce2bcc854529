/* global process */
// The transparent-mode path of the benchmark: two "pods" as network namespaces
// joined by a veth pair (A 10.78.0.1, B 10.78.0.2), each with `meshtls init`'s
// nat rules and `meshtls-proxy --transparent` running as the proxy's UID
// (2102, excluded by the rules), each with its own identity and destination
// on loopback (same issuer and registry). In B an nginx app on 127.0.0.1:8080
// (the same 1 KiB answer and bulk file as the other paths); the client (wrk,
// curl) runs in A and dials 10.78.0.2:8080 unmodified. Needs root, iproute2,
// iptables and the orig-dst addon. `remove()` deletes both namespaces (and so
// the veth and every rule); leftovers of a killed run are swept at start.
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, copyFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { waitFor } from "./wait.mjs";

const PREFIX = "mtls-bench-";
const PROXY_UID = 2102;
const pods = { a: { ns: `${PREFIX}a`, ip: "10.78.0.1" }, b: { ns: `${PREFIX}b`, ip: "10.78.0.2" } };
const ip = (...args) => execFileSync("ip", args, { encoding: "utf8", stdio: "pipe" });

/** Why the transparent path cannot run here, or undefined. */
export function transparentUnavailable() {
  if (process.getuid?.() !== 0) return "needs root (network namespaces and nat rules)";
  for (const tool of ["ip", "iptables", "setpriv"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "pipe" });
    } catch {
      return `needs ${tool} (Debian/Ubuntu: apt-get install iproute2 iptables util-linux)`;
    }
  }
  return undefined;
}

/** The argv that runs `command` inside namespace `ns` (undefined: as is). */
export function inNamespace(ns, command, args) {
  return ns === undefined ? [command, args] : ["ip", ["netns", "exec", ns, command, ...args]];
}

function removeNamespaces() {
  const existing = ip("netns", "list").split("\n").map((line) => line.split(" ")[0]);
  for (const name of existing) if (name.startsWith(PREFIX)) ip("netns", "del", name);
}

/**
 * Builds the two pods and starts everything in them with `start(name, command,
 * args)` (the bench's process starter: it kills them at the end). Returns the
 * path's target for the bench loop and `remove()`.
 */
export async function startTransparentPair({ dir, node, bins, oneKiB, big, nginxConf, start, nodeArgs }) {
  removeNamespaces();
  try {
    for (const pod of Object.values(pods)) {
      ip("netns", "add", pod.ns);
      ip("-n", pod.ns, "link", "set", "lo", "up");
    }
    ip("-n", pods.a.ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", pods.b.ns);
    for (const pod of Object.values(pods)) {
      ip("-n", pod.ns, "addr", "add", `${pod.ip}/24`, "dev", "eth0");
      ip("-n", pod.ns, "link", "set", "eth0", "up");
      execFileSync("ip", ["netns", "exec", pod.ns, node, bins.cli, "init", "--proxy-uid", String(PROXY_UID)], { stdio: "pipe" });
    }
    // The proxy's UID cannot run the Node under /root (mode 700): a copy in the bench's folder (mode 755).
    const proxyNode = path.join(dir, "node-transparent");
    copyFileSync(node, proxyNode);
    chmodSync(proxyNode, 0o755);
    for (const sa of ["a", "b"]) chownSync(path.join(dir, `${sa}.token`), PROXY_UID, PROXY_UID);
    const registry = path.join(dir, "registry-transparent.yaml");
    writeFileSync(registry, `services:\n  - name: web\n    ports: [8080]\n    endpoints: [{ address: ${pods.b.ip}, serviceAccount: b }]\n`);
    const appConf = nginxConf(dir, "app-transparent", `http { access_log off; keepalive_requests 1000000; server { listen 127.0.0.1:8080 reuseport; location = /1k { default_type text/plain; return 200 "${oneKiB}"; } location = /big { alias ${big}; } } }`);
    start("app nginx (pod b)", ...inNamespace(pods.b.ns, "nginx", ["-c", appConf, "-p", dir]));
    const proxies = {};
    for (const [sa, pod] of Object.entries(pods)) {
      const identity = start(`identity (pod ${sa})`, ...inNamespace(pod.ns, node, [bins.identity, "--trust-anchors", path.join(dir, "ca.crt"), "--issuer-dir", dir, "--token-jwks", path.join(dir, "jwks.json"), "--token-issuer", "https://meshtls.local", "--listen", "127.0.0.1:9443", "--admin", "127.0.0.1:0"]));
      start(`destination (pod ${sa})`, ...inNamespace(pod.ns, node, [bins.destination, "--registry", registry, "--listen", "127.0.0.1:8086", "--admin", "127.0.0.1:0", "--policy-addr", "127.0.0.1:0", "--insecure-plaintext"]));
      await waitForOutput(identity, '"msg":"listening"');
      const serverName = JSON.parse(identity.output().split("\n").find((l) => l.includes('"msg":"listening"'))).serverName;
      proxies[sa] = start(`proxy-${sa} (transparent)`, ...inNamespace(pod.ns, "setpriv", [
        `--reuid=${PROXY_UID}`, `--regid=${PROXY_UID}`, "--clear-groups", proxyNode, ...nodeArgs(),
        bins.proxy, "--transparent", "--identity", `${sa}.default.serviceaccount.identity.meshtls.cluster.local`, "--token-file", path.join(dir, `${sa}.token`),
        "--trust-anchors", path.join(dir, "ca.crt"), "--identity-addr", "127.0.0.1:9443", "--identity-name", serverName,
        "--destination-addr", "127.0.0.1:8086", "--destination-insecure-plaintext", "--context-token", '{"ns":"default"}',
        "--inbound", "0.0.0.0:4143", "--outbound", "127.0.0.1:4140", "--admin", "127.0.0.1:4191", "--workload", "127.0.0.1:8080", "--log-level", "warn",
      ]));
    }
    for (const [sa, pod] of Object.entries(pods)) {
      await waitFor(`transparent proxy ${sa} ready`, () => execFileSync("ip", ["netns", "exec", pod.ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:4191/ready"], { encoding: "utf8", stdio: "pipe" }) === "200");
    }
    const probe = () => execFileSync("ip", ["netns", "exec", pods.a.ns, "curl", "-s", "--max-time", "5", `http://${pods.b.ip}:8080/1k`], { encoding: "utf8", stdio: "pipe" }) === oneKiB;
    await waitFor("transparent pair", probe);
    // Proof that the path is the mesh's: A's proxy counts mTLS to B.
    const metrics = execFileSync("ip", ["netns", "exec", pods.a.ns, "curl", "-s", "http://127.0.0.1:4191/metrics"], { encoding: "utf8", stdio: "pipe" });
    if (!/tcp_open_total\{direction="outbound",peer="dst",[^}]*tls="true",server_id="b\./.test(metrics)) throw new Error("transparent pair: A's proxy shows no mTLS connection to B");
    return {
      target: { host: pods.b.ip, port: 8080, ns: pods.a.ns, pids: async () => [proxies.a.child.pid, proxies.b.child.pid] },
      remove: removeNamespaces,
    };
  } catch (error) {
    removeNamespaces();
    throw error;
  }
}

async function waitForOutput(proc, text) {
  await waitFor(text, () => proc.output().includes(text));
}

export { removeNamespaces as removeTransparentPair };
