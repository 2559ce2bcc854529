// The control plane the transparent-mode suites run (meshtls-identity and meshtls-destination), the files it and the
// proxies start from, and a proxy's flags for reaching it: one place for what mesh, redirect-fault and hostile share.
import { execFileSync } from "node:child_process";
import { chmod, chown, copyFile, mkdir } from "node:fs/promises";
import path from "node:path";
import type { Pod } from "./pods.ts";
import { binary, cli, DESTINATION_NAME, follow, identityOf, node } from "./processes.ts";

export interface MeshFilesOptions {
  /** ServiceAccounts (namespace `default`) that get a token, `tokens/<sa>.jwt`, owned by `proxyUid`. */
  serviceAccounts: readonly string[];
  /** The UID and GID the proxies run as: they read their tokens. */
  proxyUid: number;
  /** Writes `destination/leaf.{crt,key}` for {@link DESTINATION_NAME} (a destination over TLS). */
  destinationLeaf: boolean;
}

/**
 * Writes into `dir`, with the meshtls CLI: the CA (`certs/`), the identity's issuer (`issuer/`), the destination's
 * serving certificate when asked, the token signer (`tokens/`, mode 755) and one token per ServiceAccount.
 */
export async function writeMeshFiles(dir: string, options: MeshFilesOptions): Promise<void> {
  const run = (...args: string[]): void => void execFileSync(node, [cli, ...args], { encoding: "utf8" });
  run("certs", "create", "--out", path.join(dir, "certs"));
  await mkdir(path.join(dir, "issuer"));
  for (const file of ["issuer.crt", "issuer.key"]) await copyFile(path.join(dir, "certs", file), path.join(dir, "issuer", file));
  // The destination's serving certificate, for the name proxies verify it by (--destination-name).
  if (options.destinationLeaf) run("certs", "leaf", "--identity", DESTINATION_NAME, "--issuer-dir", path.join(dir, "issuer"), "--out", path.join(dir, "destination"));
  run("token", "keygen", "--out", path.join(dir, "tokens"));
  await chmod(path.join(dir, "tokens"), 0o755);
  for (const sa of options.serviceAccounts) {
    const token = path.join(dir, "tokens", `${sa}.jwt`);
    run("token", "mint", "--key", path.join(dir, "tokens", "token-signer.key"), "--namespace", "default", "--service-account", sa, "--out", token);
    await chown(token, options.proxyUid, options.proxyUid);
  }
}

export interface ControlPlaneOptions {
  /** The address both services listen on: the bridge's control-plane IP, or a pod's loopback. */
  listenIp: string;
  /** meshtls-identity's port. Default 8080. */
  identityPort?: number;
  /** meshtls-destination's port. Default 8086. */
  destinationPort?: number;
  /** The destination's policy API port (`--policy-addr`). Default: none. */
  policyPort?: number;
  /** The destination in plaintext (`--insecure-plaintext`) instead of TLS with `destination/leaf.*`. Default false. */
  destinationPlaintext?: boolean;
}

/** Where a running control plane answers, and the names the proxies verify it by. */
export interface ControlPlane {
  /** The directory {@link writeMeshFiles} filled. */
  dir: string;
  identityAddr: string;
  /** The name meshtls-identity serves (its "listening" line's `serverName`). */
  identityName: string;
  destinationAddr: string;
  /** The destination's TLS name; undefined when it runs in plaintext. */
  destinationName: string | undefined;
  policyAddr: string | undefined;
}

/**
 * Starts meshtls-identity and meshtls-destination in `pod` from the files in `dir` ({@link writeMeshFiles}, and
 * `registry.yaml`); resolves once both log "listening".
 */
export async function startControlPlane(pod: Pod, dir: string, options: ControlPlaneOptions): Promise<ControlPlane> {
  const identityAddr = `${options.listenIp}:${options.identityPort ?? 8080}`;
  const destinationAddr = `${options.listenIp}:${options.destinationPort ?? 8086}`;
  const policyAddr = options.policyPort === undefined ? undefined : `${options.listenIp}:${options.policyPort}`;
  const plaintext = options.destinationPlaintext ?? false;
  const identity = follow(
    pod.spawn(node, [binary("meshtls-identity"), "--trust-anchors", path.join(dir, "certs", "ca.crt"), "--issuer-dir", path.join(dir, "issuer"), "--token-jwks", path.join(dir, "tokens", "jwks.json"), "--listen", identityAddr, "--admin", "127.0.0.1:0"]),
    "identity",
  );
  const destination = follow(
    pod.spawn(node, [
      binary("meshtls-destination"),
      "--registry", path.join(dir, "registry.yaml"),
      "--listen", destinationAddr,
      ...(policyAddr === undefined ? [] : ["--policy-addr", policyAddr]),
      "--admin", "127.0.0.1:0",
      ...(plaintext
        ? ["--insecure-plaintext"]
        : ["--tls-cert", path.join(dir, "destination", "leaf.crt"), "--tls-key", path.join(dir, "destination", "leaf.key"), "--tls-client-ca", path.join(dir, "certs", "ca.crt")]),
    ]),
    "destination",
  );
  const [identityListening] = await Promise.all([identity.waitFor("listening"), destination.waitFor("listening")]);
  return {
    dir,
    identityAddr,
    identityName: String(identityListening["serverName"]),
    destinationAddr,
    destinationName: plaintext ? undefined : DESTINATION_NAME,
    policyAddr,
  };
}

/**
 * A transparent meshtls-proxy's argv (after the Node binary) in `pod`: its identity (ServiceAccount = pod name,
 * namespace `default`) and token, the control plane, the listeners every suite uses (inbound 0.0.0.0:4143, outbound
 * 127.0.0.1:4140, admin 127.0.0.1:4191, workload 127.0.0.1:8080), then `extra`.
 */
export function proxyArgs(pod: Pod, controlPlane: ControlPlane, extra: readonly string[] = []): string[] {
  const { dir } = controlPlane;
  return [
    binary("meshtls-proxy"),
    "--transparent",
    "--identity", identityOf(pod.name),
    "--token-file", path.join(dir, "tokens", `${pod.name}.jwt`),
    "--trust-anchors", path.join(dir, "certs", "ca.crt"),
    "--identity-addr", controlPlane.identityAddr,
    "--identity-name", controlPlane.identityName,
    "--destination-addr", controlPlane.destinationAddr,
    ...(controlPlane.destinationName === undefined ? ["--destination-insecure-plaintext"] : ["--destination-name", controlPlane.destinationName]),
    "--context-token", '{"ns":"default"}',
    "--inbound", "0.0.0.0:4143",
    "--outbound", "127.0.0.1:4140",
    "--admin", "127.0.0.1:4191",
    "--workload", "127.0.0.1:8080",
    ...extra,
  ];
}
