// The mesh under attack: PKI and tokens made by the `meshtls` CLI, then the real services and proxies on loopback.
import { execFile } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { createCsr, exportPrivateKey, generateKeyPair, importPrivateKey, issueLeaf, pemEncode, toDer } from "@meshtls/pki";
import { bins, freePort, startNode } from "./processes.ts";
import type { Proc } from "./processes.ts";

const run = promisify(execFile);

export const TOKEN_ISSUER = "https://meshtls.local";
export const identityOf = (sa: string, ns = "default"): string => `${sa}.${ns}.serviceaccount.identity.meshtls.cluster.local`;
export const DESTINATION_NAME = "destination.meshtls.serviceaccount.identity.meshtls.cluster.local";

/** A mesh leaf: PEM key and chain (leaf + issuer), also written to files. */
export interface Leaf {
  identity: string;
  keyPem: string;
  chainPem: string;
  keyFile: string;
  chainFile: string;
}

/** The mesh's PKI and token signer, made with `meshtls certs create` and `meshtls token keygen`. */
export interface Material {
  dir: string;
  caFile: string;
  caPem: string;
  jwksFile: string;
  /** A ServiceAccount token for `sa` in namespace default (`meshtls token mint`). */
  token(sa: string): Promise<string>;
  tokenFile(sa: string): Promise<string>;
  /** A leaf for `identity` signed by the mesh issuer, as the identity service would issue it. */
  leaf(identity: string): Promise<Leaf>;
  /** A CSR (DER) for `identity` with a fresh key. */
  csr(identity: string): Promise<Uint8Array>;
}

export async function createMaterial(dir: string): Promise<Material> {
  await run(process.execPath, [bins.cli, "certs", "create", "--out", dir], { timeout: 60_000 });
  await run(process.execPath, [bins.cli, "token", "keygen", "--out", dir], { timeout: 60_000 });
  const token = async (sa: string): Promise<string> => {
    const args = [bins.cli, "token", "mint", "--key", path.join(dir, "token-signer.key"), "--namespace", "default", "--service-account", sa];
    return (await run(process.execPath, args, { timeout: 60_000 })).stdout.trim();
  };
  return {
    dir,
    caFile: path.join(dir, "ca.crt"),
    caPem: readFileSync(path.join(dir, "ca.crt"), "utf8"),
    jwksFile: path.join(dir, "jwks.json"),
    token,
    async tokenFile(sa) {
      const file = path.join(dir, `${sa}.token`);
      writeFileSync(file, await token(sa), { mode: 0o600 });
      return file;
    },
    async leaf(identity) {
      const issuerCert = toDer(readFileSync(path.join(dir, "issuer.crt"), "utf8"), "CERTIFICATE");
      const issuerKey = await importPrivateKey(readFileSync(path.join(dir, "issuer.key"), "utf8"));
      const keyPair = await generateKeyPair();
      const certificate = await issueLeaf({ issuer: { certificate: issuerCert, privateKey: issuerKey.privateKey }, publicKey: keyPair.publicKey, identity });
      const chainPem = pemEncode("CERTIFICATE", certificate) + pemEncode("CERTIFICATE", issuerCert);
      const keyPem = (await exportPrivateKey(keyPair.privateKey)) as string;
      const base = path.join(dir, identity.split(".")[0] ?? "leaf");
      writeFileSync(`${base}.crt`, chainPem);
      writeFileSync(`${base}.key`, keyPem, { mode: 0o600 });
      return { identity, keyPem, chainPem, keyFile: `${base}.key`, chainFile: `${base}.crt` };
    },
    async csr(identity) {
      return createCsr({ keyPair: await generateKeyPair(), identity });
    },
  };
}

export interface Service {
  proc: Proc;
  /** `127.0.0.1:port` of the gRPC listener. */
  grpc: string;
  admin: string;
  tls: boolean;
  /** The name the TLS server presents. */
  serverName: string;
  /** meshtls-destination's policy API (`InboundServerPolicies`), `127.0.0.1:port`. */
  policy?: string;
}

/** `meshtls-identity` on 127.0.0.1 with OS-chosen ports; TLS unless `plaintext`. */
export async function startIdentity(material: Material, options: { name: string; plaintext?: boolean; workers?: number }): Promise<Service> {
  const proc = startNode(options.name, bins.identity, [
    "--trust-anchors", material.caFile,
    "--issuer-dir", material.dir,
    "--token-jwks", material.jwksFile,
    "--token-issuer", TOKEN_ISSUER,
    "--listen", "127.0.0.1:0",
    "--admin", "127.0.0.1:0",
    ...(options.plaintext === true ? ["--insecure-plaintext"] : []),
    ...(options.workers === undefined ? [] : ["--workers", String(options.workers)]),
  ]);
  const listening = await proc.waitForMsg("listening");
  return { proc, grpc: String(listening["grpc"]), admin: String(listening["admin"]), tls: options.plaintext !== true, serverName: String(listening["serverName"]) };
}

/** `meshtls-destination` on 127.0.0.1; with `tls`, mTLS (a client certificate from the mesh issuer is required). */
export async function startDestination(material: Material, options: { name: string; registryFile: string; tls?: boolean; extra?: string[] }): Promise<Service> {
  let tlsArgs = ["--insecure-plaintext"];
  if (options.tls === true) {
    const leaf = await material.leaf(DESTINATION_NAME);
    tlsArgs = ["--tls-cert", leaf.chainFile, "--tls-key", leaf.keyFile, "--tls-client-ca", material.caFile];
  }
  const proc = startNode(options.name, bins.destination, ["--registry", options.registryFile, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", ...tlsArgs, ...(options.extra ?? [])]);
  const listening = await proc.waitForMsg("listening");
  return {
    proc,
    grpc: String(listening["grpcAddress"]),
    admin: String(listening["adminAddress"]),
    tls: options.tls === true,
    serverName: DESTINATION_NAME,
    policy: String(listening["policyAddress"]),
  };
}

export interface ProxyProcess {
  proc: Proc;
  identity: string;
  inbound: string;
  outbound: string;
  admin: string;
  routes: string[];
  /** The remote tap listener, when started with `--tap-addr`. */
  tap?: string;
}

/** `meshtls-proxy` for ServiceAccount `sa`, every listener on `ip`, ready once its first certificate is held. */
export async function startProxy(
  material: Material,
  options: { name: string; sa: string; ip: string; workloadPort: number; identity: Service; destination: Service; routes?: string[]; extra?: string[] },
): Promise<ProxyProcess> {
  const { ip } = options;
  const identity = identityOf(options.sa);
  const proc = startNode(options.name, bins.proxy, [
    "--identity", identity,
    "--token-file", await material.tokenFile(options.sa),
    "--trust-anchors", material.caFile,
    "--identity-addr", options.identity.grpc,
    "--identity-name", options.identity.serverName,
    "--destination-addr", options.destination.grpc,
    "--destination-insecure-plaintext",
    "--context-token", '{"ns":"default"}',
    "--inbound", `${ip}:${await freePort(ip)}`,
    "--outbound", `${ip}:${await freePort(ip)}`,
    "--admin", `${ip}:0`,
    "--workload", `${ip}:${options.workloadPort}`,
    "--outbound-bind", ip,
    "--drain-timeout", "1s",
    ...(options.routes ?? []).flatMap((r) => ["--route", r]),
    ...(options.extra ?? []),
  ]);
  const listening = await proc.waitForMsg("listening");
  await proc.waitForMsg("first certificate obtained: ready");
  return {
    proc,
    identity,
    inbound: String(listening["inbound"]),
    outbound: String(listening["outbound"]),
    admin: String(listening["admin"]),
    routes: (listening["routes"] as string[] | undefined) ?? [],
    ...(listening["tap"] === undefined ? {} : { tap: String(listening["tap"]) }),
  };
}

export const portOf = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(":") + 1));
export const hostOf = (hostPort: string): string => hostPort.slice(0, hostPort.lastIndexOf(":")).replace(/^\[|\]$/g, "");
