import { readFileSync } from "node:fs";
import { credentials as grpcCredentials, Metadata } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { IdentityClient, timestampToDate } from "@meshtls/api";
import type { CertifyResponse , CertifyRequest} from "@meshtls/api";
import { certificateMatchesKey, createCsr, exportPrivateKey, generateKeyPair, pemEncode, verifyChain } from "@meshtls/pki";
import type { CryptoKeyPair } from "@meshtls/pki";
import { Counter, Gauge } from "prom-client";
import type { Registry } from "prom-client";
import { createControlPlaneCredentials } from "./control-plane-credentials.ts";
import type { Credentials, WritableCredentialStore } from "./credential-store.ts";
import { IdentityError } from "./errors.ts";
import { noopLogger } from "./logger.ts";
import type { Logger } from "./logger.ts";
import { backoffDelayMs, refreshDelayMs } from "./refresh-timing.ts";

/** A key pair and the CSR for it; kept across refreshes until a renewal replaces it. */
interface KeyMaterial {
  keyPair: CryptoKeyPair;
  csr: Uint8Array;
  privateKeyPem: string;
}

export interface CertifierOptions {
  /** The identity to request, e.g. `web.default.serviceaccount.identity.meshtls.cluster.local`. */
  identity: string;
  /** File holding the ServiceAccount token; re-read before every request (projected tokens rotate). */
  tokenFile: string;
  /** Trust anchors (DER), or a function returning the current set (re-read before every request). */
  trustAnchors: Uint8Array[] | (() => Uint8Array[]);
  /** The identity service, `host:port`. */
  address: string;
  /** Identity the identity service must present over TLS. Required unless `insecurePlaintext`. */
  serverName?: string;
  /** Talk plaintext gRPC (loopback tests and local demos only). Default false. */
  insecurePlaintext?: boolean;
  /** Where new credentials are published. */
  store: WritableCredentialStore;
  /** Optional SPIFFE ID to put in the CSR's URI SAN. Default: none (the service adds it to the leaf). */
  spiffeId?: string;
  /** Deadline of one Certify call, in milliseconds. Default 10000. */
  requestTimeoutMs?: number;
  /**
   * Retry backoff after a failure: first delay, cap (both in milliseconds) and
   * jitter fraction. Default 1000, 60000, 0.2: retries 1 s, 2 s, 4 s … after
   * each failure, doubling up to 60 s, each shortened by a random 0–20 %, so
   * never more than 60 s apart. Every retry dials a new connection.
   */
  backoff?: { initialMs?: number; maxMs?: number; jitter?: number };
  /** Random source in [0, 1) for jitter. Default Math.random. */
  random?: () => number;
  now?: () => Date;
  logger?: Logger;
  /** Registry for `identity_cert_expiration_timestamp_seconds` and `identity_cert_refreshes_total`. Default: not registered. */
  metricsRegistry?: Registry;
  /** Stops the certifier when aborted. */
  signal?: AbortSignal;
}

export interface Certifier {
  /** Generates the key and starts requesting certificates. Idempotent. */
  start(): void;
  /**
   * Requests a certificate now, for a new key: on success it is published to
   * the store like a scheduled refresh, later refreshes use the new key and
   * the next one is scheduled from the new certificate. Calls made while one
   * is under way share it. On failure the current certificate and schedule
   * stay. Starts the certifier if it was not.
   * @throws IdentityError the failure's code (`ERR_CERTIFY_FAILED`,
   *   `ERR_RESPONSE_INVALID`, `ERR_TOKEN_FILE`, `ERR_CONFIG_INVALID`), or
   *   `ERR_ABORTED` once stopped.
   */
  renewNow(): Promise<Credentials>;
  /** Resolves with the first certificate (or rejects if stopped before one arrives). */
  ready(): Promise<Credentials>;
  /** Stops timers and closes the channel. The store keeps its last value. */
  stop(): Promise<void>;
}

/**
 * Creates the client that keeps a workload's certificate fresh. The private
 * key is generated in memory and never written anywhere; each response is
 * checked (chain to the anchors for clientAuth and serverAuth, own name, own
 * key) before it is published to the store.
 */
export function createCertifier(options: CertifierOptions): Certifier {
  if (!options.insecurePlaintext && !options.serverName) {
    throw new IdentityError("ERR_CONFIG_INVALID", "createCertifier: serverName (the identity service's identity) is required for TLS");
  }
  const now = options.now ?? (() => new Date());
  const logger = options.logger ?? noopLogger;
  const random = options.random ?? Math.random;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const backoff = { initialMs: options.backoff?.initialMs ?? 1000, maxMs: options.backoff?.maxMs ?? 60_000, jitter: options.backoff?.jitter ?? 0.2 };
  const anchors = typeof options.trustAnchors === "function" ? options.trustAnchors : () => options.trustAnchors as Uint8Array[];
  const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
  const expiration = new Gauge({
    name: "identity_cert_expiration_timestamp_seconds",
    help: "notAfter of the current workload certificate, as a Unix timestamp.",
    registers,
  });
  const refreshes = new Counter({
    name: "identity_cert_refreshes_total",
    help: "Certificate requests, by result (ok or failure).",
    labelNames: ["result"],
    registers,
  });

  let started = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let attempt = 0;
  let client: { instance: IdentityClient; anchorsPem: string } | undefined;
  const inFlight = new Set<AbortController>();
  // Counts renewals published: a scheduled attempt that began before one
  // neither publishes nor reschedules (the renewal did both).
  let renewals = 0;
  let renewal: Promise<Credentials> | undefined;
  let readyResolve: (c: Credentials) => void = () => {};
  let readyReject: (e: unknown) => void = () => {};
  const readyPromise = new Promise<Credentials>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  readyPromise.catch(() => undefined);
  let material: Promise<KeyMaterial> | undefined;

  const onAbort = () => void stop();
  options.signal?.addEventListener("abort", onAbort, { once: true });

  function channel(anchorDer: Uint8Array[]): IdentityClient {
    const anchorsPem = anchorDer.map((d) => pemEncode("CERTIFICATE", d)).join("");
    if (client && client.anchorsPem === anchorsPem) return client.instance;
    client?.instance.close();
    const channelOptions: Record<string, string | number> = {};
    // The control plane's one client TLS: verified against these anchors and by the service's identity.
    const creds = options.insecurePlaintext
      ? grpcCredentials.createInsecure()
      : createControlPlaneCredentials({ serverName: options.serverName as string, trustBundle: { current: () => anchorDer, subscribe: () => () => undefined } }).credentials;
    if (!options.insecurePlaintext) {
      // SNI and :authority name the identity too.
      channelOptions["grpc.ssl_target_name_override"] = options.serverName as string;
      channelOptions["grpc.default_authority"] = options.serverName as string;
    }
    // A subchannel of our own: grpc-js shares subchannels between equal
    // channels, and a shared one would bring its reconnect backoff along.
    channelOptions["grpc.use_local_subchannel_pool"] = 1;
    const instance = new IdentityClient(options.address, creds, channelOptions);
    client = { instance, anchorsPem };
    return instance;
  }

  // After a failure the channel is dropped, so that the next attempt dials
  // at once: a kept channel fails calls fast while grpc-js waits out its own
  // reconnect backoff (up to 120 s), which would add to ours.
  function dropChannel(): void {
    client?.instance.close();
    client = undefined;
  }

  async function readToken(): Promise<Buffer> {
    let token: Buffer;
    try {
      // Synchronously: a token is a few KiB, and an async read would start libuv's thread pool (threads kept for good).
      token = readFileSync(options.tokenFile);
    } catch (error) {
      throw new IdentityError("ERR_TOKEN_FILE", `cannot read the token file ${options.tokenFile}: ${(error as Error).message}`, { cause: error });
    }
    const trimmed = Buffer.from(token.toString("utf8").trim(), "utf8");
    if (trimmed.byteLength === 0) throw new IdentityError("ERR_TOKEN_FILE", `the token file ${options.tokenFile} is empty`);
    return trimmed;
  }

  function call(instance: IdentityClient, request: CertifyRequest, signal: AbortSignal): Promise<CertifyResponse> {
    return new Promise((resolve, reject) => {
      const pending = instance.certify(request, new Metadata(), { deadline: Date.now() + requestTimeoutMs }, (error: ServiceError | null, response) => {
        signal.removeEventListener("abort", cancel);
        if (error) {
          reject(new IdentityError("ERR_CERTIFY_FAILED", `Certify at ${options.address} failed: ${error.details || error.message}`, { cause: error }));
        } else {
          resolve(response);
        }
      });
      const cancel = () => pending.cancel();
      signal.addEventListener("abort", cancel, { once: true });
    });
  }

  async function newMaterial(): Promise<KeyMaterial> {
    const keyPair = await generateKeyPair();
    const csr = await createCsr({ keyPair, identity: options.identity, ...(options.spiffeId === undefined ? {} : { spiffeId: options.spiffeId }) });
    const privateKeyPem = await exportPrivateKey(keyPair.privateKey);
    return { keyPair, csr, privateKeyPem: privateKeyPem as string };
  }

  async function certifyOnce(signal: AbortSignal, keys: KeyMaterial): Promise<Credentials> {
    const { keyPair, csr, privateKeyPem } = keys;
    const token = await readToken();
    const anchorDer = anchors();
    if (anchorDer.length === 0) throw new IdentityError("ERR_CONFIG_INVALID", "there are no trust anchors to verify the identity service and the leaf");
    const response = await call(
      channel(anchorDer),
      { identity: options.identity, token, certificateSigningRequest: Buffer.from(csr) },
      signal,
    );
    return checkResponse(response, { keyPair, privateKeyPem, anchorDer });
  }

  async function checkResponse(
    response: CertifyResponse,
    ctx: { keyPair: CryptoKeyPair; privateKeyPem: string; anchorDer: Uint8Array[] },
  ): Promise<Credentials> {
    const leaf = new Uint8Array(response.leafCertificate);
    const intermediates = response.intermediateCertificates.map((c) => new Uint8Array(c));
    if (leaf.byteLength === 0) throw new IdentityError("ERR_RESPONSE_INVALID", "the identity service returned no leaf certificate");
    if (!(await certificateMatchesKey(leaf, ctx.keyPair.privateKey))) {
      throw new IdentityError("ERR_RESPONSE_INVALID", "the returned leaf does not certify this workload's key");
    }
    let notAfter: Date | undefined;
    for (const purpose of ["clientAuth", "serverAuth"] as const) {
      const result = await verifyChain({
        leaf,
        intermediates,
        anchors: ctx.anchorDer,
        now: now(),
        expectedName: { dns: options.identity },
        purpose,
      });
      if (!result.ok) {
        throw new IdentityError("ERR_RESPONSE_INVALID", `the returned leaf is not usable for ${purpose}: ${result.reason}`);
      }
      notAfter = result.chain[0]?.notAfter;
    }
    if (notAfter === undefined) throw new IdentityError("ERR_RESPONSE_INVALID", "the returned chain is empty");
    if (response.validUntil && timestampToDate(response.validUntil).getTime() !== notAfter.getTime()) {
      logger.warn({ validUntil: timestampToDate(response.validUntil).toISOString(), notAfter: notAfter.toISOString() }, "valid_until differs from the leaf's notAfter; using notAfter");
    }
    const certificateChainPem = [leaf, ...intermediates].map((c) => pemEncode("CERTIFICATE", c)).join("");
    return {
      identity: options.identity,
      keyPair: ctx.keyPair,
      privateKeyPem: ctx.privateKeyPem,
      leaf,
      intermediates,
      certificateChainPem,
      notAfter,
    };
  }

  function schedule(delayMs: number): void {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => void run(), delayMs);
  }

  function publish(credentials: Credentials, renewed: boolean): void {
    attempt = 0;
    options.store.set(credentials);
    refreshes.inc({ result: "ok" });
    expiration.set(credentials.notAfter.getTime() / 1000);
    const delay = refreshDelayMs({ notAfter: credentials.notAfter, now: now() });
    logger.info({ identity: options.identity, notAfter: credentials.notAfter.toISOString(), refreshInMs: Math.round(delay), ...(renewed ? { renewed } : {}) }, "certified");
    readyResolve(credentials);
    schedule(delay);
  }

  function failed(error: unknown, retryInMs: number | undefined): void {
    refreshes.inc({ result: "failure" });
    dropChannel();
    const current = options.store.current();
    logger.warn(
      {
        identity: options.identity,
        code: (error as { code?: string }).code,
        reason: error instanceof Error ? error.message : String(error),
        ...(retryInMs === undefined ? {} : { retryInMs: Math.round(retryInMs) }),
        keeping: current ? current.notAfter.toISOString() : null,
      },
      retryInMs === undefined ? "renew failed" : "certify failed; retrying",
    );
  }

  async function run(): Promise<void> {
    timer = undefined;
    if (stopped) return;
    const before = renewals;
    const controller = new AbortController();
    inFlight.add(controller);
    try {
      material ??= newMaterial();
      const credentials = await certifyOnce(controller.signal, await material);
      if (stopped || renewals !== before) return;
      publish(credentials, false);
    } catch (error) {
      if (stopped || renewals !== before) return;
      const current = options.store.current();
      const delay = backoffDelayMs({ attempt, ...backoff, random, ...(current === undefined ? {} : { notAfter: current.notAfter, now: now() }) });
      attempt += 1;
      failed(error, delay);
      schedule(delay);
    } finally {
      inFlight.delete(controller);
    }
  }

  function renewNow(): Promise<Credentials> {
    if (stopped) return Promise.reject(new IdentityError("ERR_ABORTED", "the certifier is stopped"));
    // Unstarted, the scheduled attempts start too: they keep trying if this one fails.
    certifier.start();
    renewal ??= (async () => {
      const controller = new AbortController();
      inFlight.add(controller);
      try {
        const keys = await newMaterial();
        const credentials = await certifyOnce(controller.signal, keys);
        if (stopped) throw new IdentityError("ERR_ABORTED", "the certifier stopped during the renewal");
        material = Promise.resolve(keys);
        renewals += 1;
        publish(credentials, true);
        return credentials;
      } catch (error) {
        if (stopped) throw new IdentityError("ERR_ABORTED", "the certifier stopped during the renewal", { cause: error });
        failed(error, undefined);
        throw error instanceof IdentityError ? error : new IdentityError("ERR_CERTIFY_FAILED", `renewal failed: ${String(error)}`, { cause: error });
      } finally {
        inFlight.delete(controller);
        renewal = undefined;
      }
    })();
    return renewal;
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    options.signal?.removeEventListener("abort", onAbort);
    if (timer) clearTimeout(timer);
    for (const controller of inFlight) controller.abort();
    dropChannel();
    readyReject(new IdentityError("ERR_ABORTED", "the certifier stopped before a certificate was issued"));
  }

  const certifier: Certifier = {
    start() {
      if (started || stopped) return;
      started = true;
      if (options.signal?.aborted) {
        void stop();
        return;
      }
      schedule(0);
    },
    ready: () => readyPromise,
    renewNow,
    stop,
  };
  return certifier;
}
