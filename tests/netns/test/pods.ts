// Pods as network namespaces: each gets an `eth0` with its own IP, joined by a
// veth pair to a bridge that lives in a namespace of its own (the "node").
// Nothing here touches the host's namespace beyond creating and deleting
// namespaces whose names start with the harness's prefix.
import { execFileSync, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";

export interface PodSpec {
  /** Short name, [a-z0-9], at most 8 characters (it names the bridge-side veth). */
  name: string;
  /** IPv4 address inside the pods' /24. */
  ip: string;
}

export interface Pod extends PodSpec {
  /** The network namespace's name. */
  ns: string;
  /** Runs a command in the pod and returns its stdout; throws with its stderr on failure. */
  exec(command: string, args: readonly string[], options?: { input?: string; gid?: number; uid?: number; timeoutMs?: number }): string;
  /** Starts a long-running process in the pod (killed by {@link Pods.destroy}). */
  spawn(command: string, args: readonly string[], options?: Ids): ChildProcess;
}

/** Who a process in a pod runs as. */
export interface Ids {
  gid?: number;
  uid?: number;
}

export interface Pods {
  pods: Record<string, Pod>;
  /** Kills the processes started in the pods and deletes every namespace (and with them every veth and rule); safe to call twice. */
  destroy(): void;
}

const ip = (...args: string[]): string => execFileSync("ip", args, { encoding: "utf8", timeout: 30_000 });

/** Namespaces whose names start with `prefix`. */
export function listNamespaces(prefix: string): string[] {
  return ip("netns", "list")
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(prefix));
}

/** Deletes namespaces left by a run that was killed before its cleanup. */
export function sweepNamespaces(prefix: string): void {
  for (const name of listNamespaces(prefix)) ip("netns", "del", name);
}

/**
 * `setpriv` runs a process as another user and/or group: the proxy's UID (its
 * files must then be readable by that user), or only the proxy's GID with
 * root's UID (the stand-ins, which read the checkout as root).
 */
function wrap(ns: string, command: string, args: readonly string[], ids: Ids): [string, string[]] {
  const change = [
    ...(ids.uid === undefined ? [] : [`--reuid=${ids.uid}`]),
    ...(ids.gid === undefined ? [] : [`--regid=${ids.gid}`]),
  ];
  const inner = change.length === 0 ? [command, ...args] : ["setpriv", ...change, "--clear-groups", command, ...args];
  return ["ip", ["netns", "exec", ns, ...inner]];
}

/**
 * Creates a bridge namespace `<prefix>node` and one namespace `<prefix><name>`
 * per pod, each pod with `lo` up and `eth0` at `<ip>/24` on the bridge. On any
 * failure everything made so far is deleted before the error is thrown.
 */
export function createPods(prefix: string, specs: readonly PodSpec[]): Pods {
  const children: ChildProcess[] = [];
  const made: string[] = [];
  const destroy = (): void => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    for (const ns of made.reverse()) {
      if (listNamespaces(ns).includes(ns)) ip("netns", "del", ns);
    }
    made.length = 0;
  };
  try {
    const node = `${prefix}node`;
    ip("netns", "add", node);
    made.push(node);
    ip("-n", node, "link", "add", "br0", "type", "bridge");
    ip("-n", node, "link", "set", "br0", "up");
    const pods: Record<string, Pod> = {};
    for (const spec of specs) {
      if (!/^[a-z0-9]{1,8}$/.test(spec.name)) throw new Error(`pod name ${spec.name}: [a-z0-9], at most 8 characters`);
      const ns = `${prefix}${spec.name}`;
      ip("netns", "add", ns);
      made.push(ns);
      ip("-n", ns, "link", "set", "lo", "up");
      ip("-n", node, "link", "add", `v${spec.name}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
      ip("-n", node, "link", "set", `v${spec.name}`, "master", "br0", "up");
      ip("-n", ns, "addr", "add", `${spec.ip}/24`, "dev", "eth0");
      ip("-n", ns, "link", "set", "eth0", "up");
      pods[spec.name] = {
        ...spec,
        ns,
        exec(command, args, options = {}) {
          const [file, argv] = wrap(ns, command, args, options);
          return execFileSync(file, argv, { encoding: "utf8", input: options.input ?? "", stdio: "pipe", timeout: options.timeoutMs ?? 30_000 });
        },
        spawn(command, args, options = {}) {
          const [file, argv] = wrap(ns, command, args, options);
          const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"] });
          children.push(child);
          return child;
        },
      };
    }
    return { pods, destroy };
  } catch (error) {
    destroy();
    throw error;
  }
}
