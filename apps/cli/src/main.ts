import { Command, CommanderError, InvalidArgumentError } from "commander";
import packageJson from "../package.json" with { type: "json" };
import { bundleAnchors } from "./commands/certs-bundle.ts";
import { createCerts, DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN } from "./commands/certs-create.ts";
import { createIssuerFiles } from "./commands/certs-issuer.ts";
import { checkCertificates } from "./commands/check.ts";
import { inspectFile } from "./commands/inspect.ts";
import { generateTokenSigner } from "./commands/token-keygen.ts";
import { DEFAULT_TOKEN_AUDIENCE, DEFAULT_TOKEN_ISSUER, mintToken } from "./commands/token-mint.ts";
import { parseDurationMs } from "./duration.ts";
import { CliError, describeError } from "./errors.ts";
import { createProcessOutput } from "./output.ts";

const output = createProcessOutput();
// A closed pipe (`meshtls inspect … | head`) is not an error worth a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

/** commander argument parser for durations; a bad value becomes a usage error. */
function duration(value: string): number {
  try {
    return parseDurationMs(value);
  } catch (error) {
    throw new InvalidArgumentError(describeError(error));
  }
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
    return new Date(Date.now() + parseDurationMs(value, { allowNegative: true }));
  } catch (error) {
    throw new InvalidArgumentError(`use an RFC 3339 time or a duration from now such as 10m or -1h (${describeError(error)})`);
  }
}

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
  .option("--anchor-lifetime <duration>", "trust anchor lifetime (d, h, m, s)", duration, parseDurationMs("87600h"))
  .option("--issuer-lifetime <duration>", "issuer lifetime, clamped to the anchor's", duration, parseDurationMs("8760h"))
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
  .option("--issuer-lifetime <duration>", "issuer lifetime, clamped to the anchor's", duration, parseDurationMs("8760h"))
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
  .action(async (files: string[], opts: { out: string; force: boolean }) => {
    await bundleAnchors({ outFile: opts.out, inputFiles: files, force: opts.force }, output);
  });

program
  .command("check")
  .description("check the trust anchors and issuer: algorithm, validity, expiry, chain, key; exit 1 on error")
  .requiredOption("--anchors <file>", "trust bundle (PEM)")
  .requiredOption("--issuer-dir <dir>", "folder with issuer.crt and issuer.key")
  .option("--warn <duration>", "warn when a certificate expires within this window", duration, parseDurationMs("60d"))
  .option("--strict", "exit 1 on warnings too", false)
  .option("--json", "print JSON", false)
  .action(async (opts: { anchors: string; issuerDir: string; warn: number; strict: boolean; json: boolean }) => {
    const report = await checkCertificates(
      { anchorsFile: opts.anchors, issuerDir: opts.issuerDir, warnMs: opts.warn, strict: opts.strict, json: opts.json },
      output,
    );
    if (!report.ok) {
      process.exitCode = 1;
    }
  });

program
  .command("inspect")
  .description("describe a certificate, chain (PEM bundle) or CSR (PEM or DER)")
  .argument("<file>", "file to describe")
  .option("--json", "print JSON", false)
  .action(async (file: string, opts: { json: boolean }) => {
    await inspectFile({ file, json: opts.json }, output);
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
  .command("mint")
  .description("print a projected-ServiceAccount-style JWT for a namespace and ServiceAccount")
  .requiredOption("--key <file>", "signing key written by token keygen")
  .requiredOption("--namespace <ns>", "namespace of the ServiceAccount")
  .requiredOption("--service-account <sa>", "name of the ServiceAccount")
  .option("--audience <aud>", "aud claim", DEFAULT_TOKEN_AUDIENCE)
  .option("--issuer <iss>", "iss claim", DEFAULT_TOKEN_ISSUER)
  .option("--lifetime <duration>", "time from nbf to exp", duration, parseDurationMs("24h"))
  .option("--not-before <time>", "nbf: RFC 3339 time or duration from now (default now)", notBefore)
  .action(async (opts: { key: string; namespace: string; serviceAccount: string; audience: string; issuer: string; lifetime: number; notBefore?: Date }) => {
    await mintToken(
      {
        keyFile: opts.key,
        namespace: opts.namespace,
        serviceAccount: opts.serviceAccount,
        audience: opts.audience,
        issuer: opts.issuer,
        lifetimeMs: opts.lifetime,
        ...(opts.notBefore === undefined ? {} : { notBefore: opts.notBefore }),
      },
      output,
    );
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // commander has printed its message; help and --version exit 0, the rest are usage errors.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else if (error instanceof CliError) {
    output.err(`meshtls: ${error.message}`);
    process.exitCode = error.exitCode;
  } else {
    output.err(`meshtls: unexpected error: ${describeError(error)}`);
    process.exitCode = 1;
  }
}
