import { existsSync } from "node:fs";
import { Command, InvalidArgumentError, Option } from "commander";
import packageJson from "../package.json" with { type: "json" };
import { bundleAnchors } from "./commands/certs-bundle.ts";
import { createCerts, DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN } from "./commands/certs-create.ts";
import { createIssuerFiles } from "./commands/certs-issuer.ts";
import { createTestLeaf } from "./commands/certs-leaf.ts";
import { renewProxies } from "./commands/renew.ts";
import { checkCertificates } from "./commands/check.ts";
import { runDemo } from "./commands/demo.ts";
import { showEdges, type EdgeSourceOptions } from "./commands/edges.ts";
import { runTap, TAP_TLS_STATES } from "./commands/tap.ts";
import { runViz } from "./commands/viz.ts";
import { injectManifests } from "./commands/inject.ts";
import { installManifests } from "./commands/install.ts";
import { inspectFile } from "./commands/inspect.ts";
import { runInit } from "./commands/init.ts";
import { inspectRemote } from "./commands/inspect-remote.ts";
import { mergeJwks } from "./commands/token-jwks.ts";
import { generateTokenSigner } from "./commands/token-keygen.ts";
import { DEFAULT_TOKEN_AUDIENCE, DEFAULT_TOKEN_ISSUER, mintToken } from "./commands/token-mint.ts";
import { parseDurationMs } from "./duration.ts";
import { CliError, describeError } from "./errors.ts";
import { splitHostPort } from "./mesh/admin-client.ts";
import type { Output } from "./output.ts";

/** commander argument parser for durations; a bad value becomes a usage error. */
function duration(value: string, flag: string): number {
  try {
    return parseDurationMs(value, flag);
  } catch (error) {
    throw new InvalidArgumentError(describeError(error));
  }
}

/**
 * A duration flag whose default is shown as written (`87600h`, not its
 * milliseconds), so the help never shows a value the flag would refuse.
 */
function durationOption(flags: string, description: string, defaultText?: string): Option {
  const flag = flags.split(" ")[0]!;
  const option = new Option(flags, description).argParser((value: string) => duration(value, flag));
  return defaultText === undefined ? option : option.default(duration(defaultText, flag), defaultText);
}

/** `--not-before`: an RFC 3339 time, or a duration from now (`10m`, `-1h`). */
function notBefore(value: string): Date {
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) {
      throw new InvalidArgumentError(`"${value}" is not an RFC 3339 time`);
    }
    return date;
  }
  try {
    return new Date(Date.now() + parseDurationMs(value, "--not-before", { allowNegative: true }));
  } catch (error) {
    throw new InvalidArgumentError(`use an RFC 3339 time or a duration from now such as 10m or -1h (${describeError(error)})`);
  }
}

/** `check --wait`: a duration of at most 1 hour (a wait, not a schedule). */
function waitDuration(value: string): number {
  const ms = parseDurationMs(value, "--wait");
  if (ms > 3_600_000) throw new CliError("ERR_USAGE", "--wait must be at most 1h");
  return ms;
}

/** Repeatable flags. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** A `host:port` flag value, checked; a bad one is a usage error. */
function hostPort(value: string): string {
  try {
    splitHostPort(value);
    return value;
  } catch (error) {
    throw new CliError("ERR_USAGE", describeError(error));
  }
}

/**
 * `inspect X`: X is a server when it looks like host:port and is not an
 * existing file, or when --sni/--cert/--key (server-only flags) are given.
 */
function isRemoteTarget(target: string, opts: { sni?: string; cert?: string; key?: string }): boolean {
  if (opts.sni !== undefined || opts.cert !== undefined || opts.key !== undefined) return true;
  return /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(target) && !existsSync(target);
}

/** The flags `edges`, `viz` and `tap` share: which proxies to read. */
function edgeSourceOptions(command: Command): Command {
  return command
    .option("--proxy-admin <host:port>", "a proxy's admin address to read (repeatable)", collect)
    .option("--registry <file>", "a destination registry file: names its endpoints; each meshed endpoint's proxy is read at <address>:<--admin-port> unless a --proxy-admin is on that address")
    .option("--admin-port <port>", "proxy admin port of registry endpoints", "4191")
    .option("--control-namespace <ns>", "control plane namespace in identities", DEFAULT_CONTROL_NAMESPACE)
    .option("--trust-domain <domain>", "trust domain in identities", DEFAULT_TRUST_DOMAIN)
    .option("--kubernetes", "read every meshed pod's proxy at <pod IP>:<its admin port from the pod spec> (pods listed through the Kubernetes API)", false)
    .option("--kubeconfig <file>", "with --kubernetes: kubeconfig file; without it KUBECONFIG, ~/.kube/config, then in-cluster")
    .option("-n, --namespace <ns>", "with --kubernetes: only this namespace's pods; without it, every namespace");
}

function edgeSources(opts: { proxyAdmin?: string[]; registry?: string; adminPort: string; controlNamespace: string; trustDomain: string; kubernetes?: boolean; kubeconfig?: string; namespace?: string }): EdgeSourceOptions {
  const adminPort = Number(opts.adminPort);
  if (!Number.isInteger(adminPort) || adminPort < 1 || adminPort > 65535) throw new CliError("ERR_USAGE", `--admin-port ${opts.adminPort} is not a port`);
  if (opts.kubernetes !== true && (opts.kubeconfig !== undefined || opts.namespace !== undefined)) throw new CliError("ERR_USAGE", "--kubeconfig and --namespace need --kubernetes");
  return {
    ...(opts.kubernetes === true ? { kubernetes: { ...(opts.kubeconfig === undefined ? {} : { kubeconfig: opts.kubeconfig }), ...(opts.namespace === undefined ? {} : { namespace: opts.namespace }) } } : {}),
    proxyAdmins: (opts.proxyAdmin ?? []).map(hostPort),
    ...(opts.registry === undefined ? {} : { registryFile: opts.registry }),
    adminPort,
    controlNamespace: opts.controlNamespace,
    trustDomain: opts.trustDomain,
  };
}

/** The `meshtls` command line; actions write to `output`. */
export function createProgram(output: Output): Command {
  const program = new Command("meshtls")
    .description("meshtls: certificates, tokens and checks for an mTLS service mesh")
    .version(packageJson.version)
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({
      writeOut: (text) => process.stdout.write(text),
      writeErr: (text) => process.stderr.write(text),
      outputError: (text, write) => write(`meshtls: ${text.replace(/^error: /, "")}`),
    });

  const certs = program.command("certs").description("create and rotate the trust anchor and issuer");

  certs
    .command("create")
    .description("write a new trust anchor (ca.crt, ca.key) and issuer (issuer.crt, issuer.key) to a folder")
    .requiredOption("--out <dir>", "folder to write into (created if missing)")
    .option("--trust-domain <name>", "trust domain", DEFAULT_TRUST_DOMAIN)
    .option("--control-namespace <name>", "namespace of the control plane", DEFAULT_CONTROL_NAMESPACE)
    .addOption(durationOption("--anchor-lifetime <duration>", "trust anchor lifetime (d, h, m, s)", "87600h"))
    .addOption(durationOption("--issuer-lifetime <duration>", "issuer lifetime, clamped to the anchor's", "8760h"))
    .option("--force", "replace existing files", false)
    .action(async (opts: { out: string; trustDomain: string; controlNamespace: string; anchorLifetime: number; issuerLifetime: number; force: boolean }) => {
      await createCerts(
        {
          outDir: opts.out,
          trustDomain: opts.trustDomain,
          controlNamespace: opts.controlNamespace,
          anchorLifetimeMs: opts.anchorLifetime,
          issuerLifetimeMs: opts.issuerLifetime,
          force: opts.force,
        },
        output,
      );
    });

  certs
    .command("issuer")
    .description("write a new issuer (issuer.crt, issuer.key) under an existing trust anchor, for rotation")
    .requiredOption("--ca-cert <file>", "trust anchor certificate (PEM or DER)")
    .requiredOption("--ca-key <file>", "trust anchor private key (PKCS#8 or EC PEM)")
    .requiredOption("--out <dir>", "folder to write into (created if missing)")
    .addOption(durationOption("--issuer-lifetime <duration>", "issuer lifetime, clamped to the anchor's", "8760h"))
    .option("--trust-domain <name>", "trust domain (for the issuer's name)", DEFAULT_TRUST_DOMAIN)
    .option("--control-namespace <name>", "namespace of the control plane (for the issuer's name)", DEFAULT_CONTROL_NAMESPACE)
    .option("--force", "replace existing files", false)
    .action(async (opts: { caCert: string; caKey: string; out: string; issuerLifetime: number; trustDomain: string; controlNamespace: string; force: boolean }) => {
      await createIssuerFiles(
        {
          caCertFile: opts.caCert,
          caKeyFile: opts.caKey,
          outDir: opts.out,
          issuerLifetimeMs: opts.issuerLifetime,
          trustDomain: opts.trustDomain,
          controlNamespace: opts.controlNamespace,
          force: opts.force,
        },
        output,
      );
    });

  certs
    .command("bundle")
    .description("merge trust anchors (e.g. old + new) into one PEM trust bundle")
    .requiredOption("--out <file>", "bundle file to write")
    .argument("<certs...>", "certificate files (PEM bundles or DER)")
    .option("--force", "replace an existing bundle", false)
    .option("--proxy-admin <host:port>", "a running proxy's admin address: refuse a bundle its certificate would not verify under (repeatable)", collect)
    .option("--identity-addr <host:port>", "a running identity service: refuse a bundle its serving certificate would not verify under")
    .option("--allow-drop", "write the bundle even when running certificates would not verify under it (a warning on stderr)", false)
    .action(async (files: string[], opts: { out: string; force: boolean; proxyAdmin?: string[]; identityAddr?: string; allowDrop: boolean }) => {
      await bundleAnchors(
        {
          outFile: opts.out,
          inputFiles: files,
          force: opts.force,
          proxyAdmins: (opts.proxyAdmin ?? []).map(hostPort),
          ...(opts.identityAddr === undefined ? {} : { identityAddress: hostPort(opts.identityAddr) }),
          allowDrop: opts.allowDrop,
        },
        output,
      );
    });

  certs
    .command("leaf")
    .description("TESTING ONLY: a short-lived workload certificate signed with the issuer's key (leaf.crt, leaf.key), to call a proxy by hand")
    .requiredOption("--identity <name>", "identity to certify, e.g. web.default.serviceaccount.identity.meshtls.cluster.local")
    .requiredOption("--issuer-dir <dir>", "issuer folder: issuer.crt + issuer.key, crt.pem + key.pem or tls.crt + tls.key")
    .requiredOption("--out <dir>", "folder for leaf.crt (leaf, then the issuer) and leaf.key (mode 0600)")
    .addOption(durationOption("--lifetime <duration>", "certificate lifetime, 1m to 24h", "1h"))
    .option("--force", "replace existing files", false)
    .action(async (opts: { identity: string; issuerDir: string; out: string; lifetime: number; force: boolean }) => {
      await createTestLeaf({ identity: opts.identity, issuerDir: opts.issuerDir, outDir: opts.out, lifetimeMs: opts.lifetime, force: opts.force }, output);
    });

  program
    .command("check")
    .description("check the trust anchors and issuer (files), a running identity service and proxies; exit 1 on error")
    .option("--anchors <file>", "trust bundle (PEM)")
    .option("--issuer-dir <dir>", "issuer folder as the identity service reads it: issuer.crt + issuer.key, crt.pem + key.pem or tls.crt + tls.key (needs --anchors)")
    .option("--identity-addr <host:port>", "a running identity service's gRPC address: check the certificate it serves")
    .option("--proxy-admin <host:port>", "a running proxy's admin address: check /ready and its certificate (repeatable)", collect)
    .option("--candidate-anchors <file>", "a trust bundle about to be rolled out: every running certificate and the issuer must verify under it")
    .option("--kubernetes", "list pods through the Kubernetes API: one the injector would mesh that has no proxy (admitted while it was unreachable) is an error", false)
    .option("--kubeconfig <file>", "with --kubernetes: kubeconfig file; without it KUBECONFIG, ~/.kube/config, then in-cluster")
    .option("-n, --namespace <ns>", "with --kubernetes: only this namespace's pods; without it, every namespace")
    .addOption(durationOption("--warn <duration>", "warn when a certificate expires within this window", "60d"))
    .option("--wait <duration>", "repeat the checks every second until they pass, for at most this long")
    .option("--strict", "exit 1 on warnings too", false)
    .option("--json", "print JSON", false)
    .action(async (opts: { anchors?: string; issuerDir?: string; identityAddr?: string; proxyAdmin?: string[]; candidateAnchors?: string; kubernetes: boolean; kubeconfig?: string; namespace?: string; warn: number; wait?: string; strict: boolean; json: boolean }) => {
      if (!opts.kubernetes && (opts.kubeconfig !== undefined || opts.namespace !== undefined)) throw new CliError("ERR_USAGE", "--kubeconfig and --namespace need --kubernetes");
      const report = await checkCertificates(
        {
          ...(opts.anchors === undefined ? {} : { anchorsFile: opts.anchors }),
          ...(opts.candidateAnchors === undefined ? {} : { candidateAnchorsFile: opts.candidateAnchors }),
          ...(opts.wait === undefined ? {} : { waitMs: waitDuration(opts.wait) }),
          ...(opts.issuerDir === undefined ? {} : { issuerDir: opts.issuerDir }),
          ...(opts.identityAddr === undefined ? {} : { identityAddress: hostPort(opts.identityAddr) }),
          proxyAdmins: (opts.proxyAdmin ?? []).map(hostPort),
          ...(opts.kubernetes ? { kubernetes: { ...(opts.kubeconfig === undefined ? {} : { kubeconfig: opts.kubeconfig }), ...(opts.namespace === undefined ? {} : { namespace: opts.namespace }) } } : {}),
          warnMs: opts.warn,
          strict: opts.strict,
          json: opts.json,
        },
        output,
      );
      if (!report.ok) {
        process.exitCode = 1;
      }
    });

  program
    .command("inspect")
    .description("describe a certificate, chain or CSR file, or the identity a TLS server (a proxy's inbound port) presents")
    .argument("<file|host:port>", "file to describe, or a server to connect to")
    .option("--sni <identity>", "HOST:PORT: the identity to ask for (SNI); a proxy terminates TLS only for its own")
    .option("--anchors <file>", "trust bundle to verify the file's chain, or the chain the server presents, against; exit 1 when it does not verify")
    .option("--cert <file>", "HOST:PORT: client certificate to present (e.g. a workload's; a proxy under all-authenticated refuses clients without one); needs --key")
    .option("--key <file>", "HOST:PORT: private key of --cert")
    .option("--json", "print JSON", false)
    .action(async (target: string, opts: { json: boolean; sni?: string; anchors?: string; cert?: string; key?: string }) => {
      if (isRemoteTarget(target, opts)) {
        const result = await inspectRemote(
          {
            address: hostPort(target),
            json: opts.json,
            ...(opts.sni === undefined ? {} : { sni: opts.sni }),
            ...(opts.anchors === undefined ? {} : { anchorsFile: opts.anchors }),
            ...(opts.cert === undefined ? {} : { certFile: opts.cert }),
            ...(opts.key === undefined ? {} : { keyFile: opts.key }),
          },
          output,
        );
        if (result.verification?.ok === false) process.exitCode = 1;
      } else {
        const result = await inspectFile({ file: target, json: opts.json, ...(opts.anchors === undefined ? {} : { anchorsFile: opts.anchors }) }, output);
        if (opts.anchors !== undefined && "verification" in result && result.verification?.ok === false) process.exitCode = 1;
      }
    });

  program
    .command("renew")
    .description("ask proxies for a new certificate now (POST /renew on their admin port) and print its expiry, issuer and anchor")
    .requiredOption("--proxy-admin <host:port>", "a running proxy's admin address (repeatable)", collect)
    .addOption(durationOption("--timeout <duration>", "bound of each proxy's renewal, at least 1s", "30s"))
    .action(async (opts: { proxyAdmin: string[]; timeout: number }) => {
      if (opts.timeout < 1_000) throw new CliError("ERR_USAGE", "--timeout must be at least 1s");
      await renewProxies({ proxyAdmins: opts.proxyAdmin.map(hostPort), timeoutMs: opts.timeout }, output);
    });

  edgeSourceOptions(
    program
      .command("edges")
      .description("one row per edge between workloads, from the proxies' metrics: identities, secured or why not, connections, bytes, HTTP rates"),
  )
    .addOption(new Option("-o, --output <format>", "table, wide or json").choices(["table", "wide", "json"]).default("table"))
    .addOption(durationOption("--window <duration>", "time between the two scrapes rates and active edges come from (0s: one scrape)", "1s"))
    .option("--require-secured", "exit 1 when an active edge is plaintext or a proxy cannot be read", false)
    .action(async (opts: { proxyAdmin?: string[]; registry?: string; adminPort: string; controlNamespace: string; trustDomain: string; output: "table" | "wide" | "json"; window: number; requireSecured: boolean }) => {
      if (opts.window > 60_000) throw new CliError("ERR_USAGE", "--window must be at most 1m");
      await showEdges({ ...edgeSources(opts), output: opts.output, windowMs: opts.window, requireSecured: opts.requireSecured }, output);
    });

  edgeSourceOptions(
    program
      .command("viz")
      .alias("dashboard")
      .description("serve a live view of the mesh on loopback: a graph of workloads and edges (secured, plaintext, denied), a live tap pane and the edges table"),
  )
    .option("--listen <host:port>", "loopback address to serve on", "127.0.0.1:0")
    .addOption(durationOption("--interval <duration>", "time between scrapes", "2s"))
    .action(async (opts: { proxyAdmin?: string[]; registry?: string; adminPort: string; controlNamespace: string; trustDomain: string; listen: string; interval: number }) => {
      if (opts.interval < 200) throw new CliError("ERR_USAGE", "--interval must be at least 200ms");
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      try {
        await runViz({ ...edgeSources(opts), listen: opts.listen, intervalMs: opts.interval, signal: stop.signal }, output);
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });

  edgeSourceOptions(
    program
      .command("tap")
      .description("stream live connection, policy and request events from proxies (GET /tap on their admin port): identities, TLS state, bytes, status, latency; metadata only"),
  )
    .option("--workload <ns/name>", "only events of this workload's proxy or with a peer of it")
    .option("--identity <identity>", "only events of the proxy with this identity or with a peer of it")
    .addOption(new Option("--tls <state>", "only events with this TLS state").choices([...TAP_TLS_STATES]))
    .addOption(new Option("-o, --output <format>", "text or json (one object per line)").choices(["text", "json"]).default("text"))
    .option("--max-events <n>", "stop after this many events; without it, until Ctrl-C")
    .option("--proxy-tap <host:port>", "a proxy's --tap-addr listener, tapped over mutual TLS with --cert/--key/--ca (repeatable)", collect)
    .option("--cert <file>", "--proxy-tap: mesh client certificate chain (PEM) whose identity the proxy's --tap-allow names")
    .option("--key <file>", "--proxy-tap: private key of --cert")
    .option("--ca <file>", "--proxy-tap: trust anchors the proxy's certificate must chain to")
    .option("--proxy-identity <identity>", "--proxy-tap: the identity the proxy must present; without it, any identity chained to --ca")
    .action(async (opts: { proxyAdmin?: string[]; registry?: string; adminPort: string; controlNamespace: string; trustDomain: string; workload?: string; identity?: string; tls?: (typeof TAP_TLS_STATES)[number]; output: "text" | "json"; maxEvents?: string; proxyTap?: string[]; cert?: string; key?: string; ca?: string; proxyIdentity?: string }) => {
      const maxEvents = opts.maxEvents === undefined ? undefined : Number(opts.maxEvents);
      if (maxEvents !== undefined && (!Number.isInteger(maxEvents) || maxEvents < 1)) throw new CliError("ERR_USAGE", `--max-events ${opts.maxEvents} is not a positive integer`);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      try {
        await runTap(
          {
            ...edgeSources(opts),
            output: opts.output,
            ...(opts.workload === undefined ? {} : { workload: opts.workload }),
            ...(opts.identity === undefined ? {} : { identity: opts.identity }),
            ...(opts.tls === undefined ? {} : { tls: opts.tls }),
            ...(maxEvents === undefined ? {} : { maxEvents }),
            ...(opts.proxyTap === undefined ? {} : { proxyTaps: opts.proxyTap.map(hostPort) }),
            ...(opts.cert === undefined || opts.key === undefined || opts.ca === undefined
              ? {}
              : { client: { certFile: opts.cert, keyFile: opts.key, caFile: opts.ca, ...(opts.proxyIdentity === undefined ? {} : { proxyIdentity: opts.proxyIdentity }) } }),
            signal: stop.signal,
          },
          output,
        );
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });

  program
    .command("demo")
    .description("run a whole mesh on loopback (identity, destination, two workloads with proxies) and show it live")
    .option("--no-tty", "print plain lines instead of a live view (also when stdout is not a terminal)")
    .addOption(durationOption("--duration <duration>", "stop after this long once the mesh is up; without it, at Ctrl-C"))
    .addOption(durationOption("--lifetime <duration>", "lifetime of workload certificates (short, so refreshes show: 7s leaves refresh every ~6s)", "7s"))
    .option("--keep", "keep the mesh folder (certificates, tokens, registry) and print its path", false)
    .action(async (opts: { tty: boolean; duration?: number; lifetime: number; keep: boolean }) => {
      if (opts.lifetime < 5_000) throw new CliError("ERR_USAGE", "--lifetime must be at least 5s (proxies refresh at 70 % of it)");
      const stop = new AbortController();
      let signal: NodeJS.Signals | undefined;
      const onSignal = (name: NodeJS.Signals): void => {
        signal ??= name;
        stop.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      try {
        const result = await runDemo(
          {
            tty: opts.tty && process.stdout.isTTY,
            lifetimeMs: opts.lifetime,
            keep: opts.keep,
            signal: stop.signal,
            ...(opts.duration === undefined ? {} : { durationMs: opts.duration }),
          },
          output,
        );
        if (signal !== undefined) process.exitCode = signal === "SIGINT" ? 130 : 143;
        else if (!result.ok) process.exitCode = 1;
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });

  program
    .command("install")
    .description("print the control plane's manifests for kubectl apply -f -: namespace, CRDs, trust roots, issuer, RBAC, identity, destination and injector, the webhook")
    .addOption(new Option("--issuer-from <source>", "files: the issuer Secret from --certs-dir; cert-manager: Issuers and Certificates from the meshtls-trust-anchor Secret").choices(["files", "cert-manager"]).default("files"))
    .option("--certs-dir <dir>", "folder written by meshtls certs create (ca.crt, issuer.crt, issuer.key)")
    .option("--trust-anchors <file>", "trust anchors PEM; without it, <certs-dir>/ca.crt")
    .option("--control-namespace <ns>", "control-plane namespace", DEFAULT_CONTROL_NAMESPACE)
    .option("--trust-domain <domain>", "trust domain of identity names", DEFAULT_TRUST_DOMAIN)
    .option("--cluster-domain <domain>", "DNS domain of service names", "cluster.local")
    .option("--registry <registry>", "image registry of the meshtls images", "ghcr.io/meshtls")
    .option("--tag <tag>", "image tag; without it, this CLI's version")
    .option("--replicas <n>", "replicas of each control-plane Deployment: 1, or 3 with --ha")
    .option("--ha", "three replicas of each, on different nodes", false)
    .option("--default-inbound-policy <policy>", "default inbound policy of the controller and the proxies", "all-unauthenticated")
    .addOption(new Option("--output <format>", "output format").choices(["yaml", "json"]).default("yaml"))
    .action(async (opts: { issuerFrom: "files" | "cert-manager"; certsDir?: string; trustAnchors?: string; controlNamespace: string; trustDomain: string; clusterDomain: string; registry: string; tag?: string; replicas?: string; ha: boolean; defaultInboundPolicy: string; output: "yaml" | "json" }) => {
      const replicas = opts.replicas === undefined ? undefined : Number(opts.replicas);
      if (replicas !== undefined && (!Number.isInteger(replicas) || replicas < 1 || replicas > 100)) throw new CliError("ERR_USAGE", `--replicas: "${opts.replicas}" is not a count from 1 to 100`);
      await installManifests(
        {
          issuerFrom: opts.issuerFrom,
          ...(opts.certsDir === undefined ? {} : { certsDir: opts.certsDir }),
          ...(opts.trustAnchors === undefined ? {} : { trustAnchorsFile: opts.trustAnchors }),
          namespace: opts.controlNamespace,
          trustDomain: opts.trustDomain,
          clusterDomain: opts.clusterDomain,
          registry: opts.registry,
          tag: opts.tag ?? packageJson.version,
          ha: opts.ha,
          ...(replicas === undefined ? {} : { replicas }),
          defaultInboundPolicy: opts.defaultInboundPolicy,
          format: opts.output,
        },
        output,
      );
    });

  program
    .command("inject")
    .description("mesh the workloads of Kubernetes manifests (files, folders, - for stdin): proxy sidecar, init container, token volume, annotations; summary on stderr")
    .argument("<inputs...>", "YAML or JSON files, folders of them, or - (standard input)")
    .requiredOption("--trust-anchors <file>", "trust anchors PEM (the trust-roots ConfigMap's content; its SHA-256 goes on each pod)")
    .option("--control-namespace <ns>", "control-plane namespace", DEFAULT_CONTROL_NAMESPACE)
    .option("--trust-domain <domain>", "trust domain of identity names", DEFAULT_TRUST_DOMAIN)
    .option("--cluster-domain <domain>", "DNS domain of service names", "cluster.local")
    .option("--registry <registry>", "image registry of the meshtls images", "ghcr.io/meshtls")
    .option("--tag <tag>", "image tag; without it, this CLI's version")
    .option("--default-inbound-policy <policy>", "inbound policy of ports until the policy controller answers", "all-unauthenticated")
    .option("--no-native-sidecar", "the proxy as a regular container instead of a native sidecar")
    .addOption(new Option("--output <format>", "output format").choices(["yaml", "json"]).default("yaml"))
    .action(async (inputs: string[], opts: { trustAnchors: string; controlNamespace: string; trustDomain: string; clusterDomain: string; registry: string; tag?: string; defaultInboundPolicy: string; nativeSidecar: boolean; output: "yaml" | "json" }) => {
      const version = opts.tag ?? packageJson.version;
      await injectManifests(
        {
          inputs,
          trustAnchorsFile: opts.trustAnchors,
          format: opts.output,
          controlPlaneNamespace: opts.controlNamespace,
          trustDomain: opts.trustDomain,
          clusterDomain: opts.clusterDomain,
          version,
          proxyImage: `${opts.registry}/proxy:${version}`,
          initImage: `${opts.registry}/cli:${version}`,
          defaultInboundPolicy: opts.defaultInboundPolicy,
          nativeSidecar: opts.nativeSidecar,
        },
        output,
      );
    });

  program
    .command("init")
    .description("transparent mode: install the nat rules of Linkerd's proxy-init in this network namespace (root or CAP_NET_ADMIN), IPv4 and IPv6; running it again changes nothing")
    .option("--proxy-uid <uid>", "UID the proxy runs as: its connections are not redirected (0: no rule)", "2102")
    .option("--proxy-gid <gid>", "GID the proxy runs as, also not redirected")
    .option("--incoming-proxy-port <port>", "the proxy's inbound port, where inbound connections go", "4143")
    .option("--outgoing-proxy-port <port>", "the proxy's outbound port, where the workload's connections go", "4140")
    .option("--inbound-ports-to-ignore <ports>", "inbound ports or ranges (8000:8080) not redirected, comma-separated (repeatable; default 4190,4191, the proxy's admin ports)", collect)
    .option("--outbound-ports-to-ignore <ports>", "outbound ports or ranges not redirected, comma-separated (repeatable)", collect)
    .option("--ports-to-redirect <ports>", "redirect only these inbound ports, comma-separated; without it, every inbound port", collect)
    .option("--subnets-to-ignore <cidrs>", "source CIDRs whose inbound connections are not redirected, comma-separated (repeatable)", collect)
    .option("--redirect-check-addr <ip:port>", "the proxy's redirect-check probe address (meshtls-proxy --redirect-check-addr): one rule of ours, first in PROXY_INIT_OUTPUT, redirects connections to it, the proxy's own included, to the outbound port", "1.1.1.1:20001")
    .option("--no-redirect-check", "leave that rule out: proxy-init's rules exactly (the proxy's --redirect-check-interval must then stay 0)")
    .option("--iptables-mode <mode>", "nft (falls back to plain, then legacy, when missing), legacy or plain", "nft")
    .option("--no-ipv6", "leave the IPv6 (ip6tables) rules alone")
    .option("--dry-run", "print the iptables commands and change nothing", false)
    .option("--remove", "remove the rules and chains instead of installing them", false)
    .action(async (opts: { proxyUid: string; proxyGid?: string; incomingProxyPort: string; outgoingProxyPort: string; inboundPortsToIgnore?: string[]; outboundPortsToIgnore?: string[]; portsToRedirect?: string[]; subnetsToIgnore?: string[]; redirectCheckAddr: string; redirectCheck: boolean; iptablesMode: string; ipv6: boolean; dryRun: boolean; remove: boolean }) => {
      const list = (values: string[] | undefined): string[] => (values ?? []).flatMap((value) => value.split(",")).map((item) => item.trim()).filter((item) => item !== "");
      const integer = (value: string, flag: string): number => {
        if (!/^\d+$/.test(value)) throw new CliError("ERR_USAGE", `${flag}: "${value}" is not a number`);
        return Number(value);
      };
      if (!["nft", "legacy", "plain"].includes(opts.iptablesMode)) throw new CliError("ERR_USAGE", `--iptables-mode must be nft, legacy or plain, not "${opts.iptablesMode}"`);
      const probe = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(opts.redirectCheckAddr.trim());
      if (probe === null) throw new CliError("ERR_USAGE", `--redirect-check-addr: "${opts.redirectCheckAddr}" is not ip:port (e.g. 1.1.1.1:20001)`);
      await runInit(
        {
          proxyUid: integer(opts.proxyUid, "--proxy-uid"),
          ...(opts.proxyGid === undefined ? {} : { proxyGid: integer(opts.proxyGid, "--proxy-gid") }),
          inboundPort: integer(opts.incomingProxyPort, "--incoming-proxy-port"),
          outboundPort: integer(opts.outgoingProxyPort, "--outgoing-proxy-port"),
          inboundPortsToIgnore: opts.inboundPortsToIgnore === undefined ? ["4190", "4191"] : list(opts.inboundPortsToIgnore),
          outboundPortsToIgnore: list(opts.outboundPortsToIgnore),
          portsToRedirect: list(opts.portsToRedirect).map((port) => integer(port, "--ports-to-redirect")),
          subnetsToIgnore: list(opts.subnetsToIgnore),
          ...(opts.redirectCheck ? { redirectCheckProbe: { host: probe[1] ?? probe[2] ?? "", port: Number(probe[3]) } } : {}),
          mode: opts.iptablesMode as "nft" | "legacy" | "plain",
          ipv6: opts.ipv6,
          dryRun: opts.dryRun,
          remove: opts.remove,
        },
        output,
      );
    });

  const token = program.command("token").description("a local ServiceAccount token signer (stands in for Kubernetes)");

  token
    .command("keygen")
    .description("write an ES256 signing key (token-signer.key) and its public JWKS (jwks.json)")
    .requiredOption("--out <dir>", "folder to write into (created if missing)")
    .option("--force", "replace existing files", false)
    .action(async (opts: { out: string; force: boolean }) => {
      await generateTokenSigner({ outDir: opts.out, force: opts.force }, output);
    });

  token
    .command("jwks")
    .description("merge the public keys of JWKS files (old + new signer) into one, replaced in one step")
    .requiredOption("--out <file>", "JWKS file to write, e.g. the identity service's --token-jwks (may be one of the inputs)")
    .argument("<jwks...>", "JWKS files to merge, in order")
    .option("--force", "replace an existing file", false)
    .action(async (files: string[], opts: { out: string; force: boolean }) => {
      await mergeJwks({ outFile: opts.out, inputFiles: files, force: opts.force }, output);
    });

  token
    .command("mint")
    .description("print (or write with --out) a projected-ServiceAccount-style JWT for a namespace and ServiceAccount")
    .requiredOption("--key <file>", "signing key written by token keygen")
    .requiredOption("--namespace <ns>", "namespace of the ServiceAccount")
    .requiredOption("--service-account <sa>", "name of the ServiceAccount")
    .option("--audience <aud>", "aud claim", DEFAULT_TOKEN_AUDIENCE)
    .option("--issuer <iss>", "iss claim", DEFAULT_TOKEN_ISSUER)
    .addOption(durationOption("--lifetime <duration>", "time from nbf to exp", "24h"))
    .option("--not-before <time>", "nbf: RFC 3339 time or duration from now (default now)", notBefore)
    .option("--out <file>", "write the token to this file (mode 0600, atomically) instead of stdout: a token is a credential, keep it out of terminals and logs")
    .option("--force", "with --out: replace an existing file", false)
    .action(async (opts: { key: string; namespace: string; serviceAccount: string; audience: string; issuer: string; lifetime: number; notBefore?: Date; out?: string; force: boolean }) => {
      if (opts.force && opts.out === undefined) throw new CliError("ERR_USAGE", "--force needs --out");
      await mintToken(
        {
          keyFile: opts.key,
          namespace: opts.namespace,
          serviceAccount: opts.serviceAccount,
          audience: opts.audience,
          issuer: opts.issuer,
          lifetimeMs: opts.lifetime,
          ...(opts.notBefore === undefined ? {} : { notBefore: opts.notBefore }),
          ...(opts.out === undefined ? {} : { outFile: opts.out, force: opts.force }),
        },
        output,
      );
    });

  return program;
}
