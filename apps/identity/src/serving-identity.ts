import type { experimental } from "@grpc/grpc-js";
import type { Issuer, IssuerStore, Logger } from "@meshtls/identity";
import { refreshDelayMs } from "@meshtls/identity";
import { exportPrivateKey, generateKeyPair, identityName, issueLeaf, parseCertificate, pemEncode, spiffeId } from "@meshtls/pki";

type IdentityListener = experimental.IdentityCertificateUpdateListener;
type CaListener = experimental.CaCertificateUpdateListener;

/**
 * The identity service's own TLS certificate, for
 * `<sa>.<ns>.serviceaccount.identity.<ns>.<td>` (`<sa>` = `identity`, or
 * `linkerd-identity` in a `linkerd` control namespace), issued by itself from
 * the current issuer and re-issued when the issuer rotates or at 70 % of its
 * lifetime. A grpc-js CertificateProvider, so the server swaps it live.
 */
export class ServingIdentity implements experimental.CertificateProvider {
  readonly name: string;
  private latest: { certificate: Buffer; privateKey: Buffer } | null = null;
  private readonly listeners = new Set<IdentityListener>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;
  notAfter: Date | undefined;

  constructor(
    private readonly options: {
      issuerStore: IssuerStore;
      trustDomain: string;
      controlNamespace: string;
      /** The service's own ServiceAccount. */
      serviceAccount: string;
      lifetimeMs: number;
      skewMs: number;
      logger: Logger;
    },
  ) {
    const ns = options.controlNamespace;
    this.name = identityName({ serviceAccount: options.serviceAccount, namespace: ns, controlNamespace: ns, trustDomain: options.trustDomain });
  }

  /** Issues the first certificate and follows issuer rotations. */
  async start(): Promise<void> {
    this.unsubscribe = this.options.issuerStore.subscribe((issuer) => void this.renew(issuer));
    const state = this.options.issuerStore.current();
    if (!state.ok) throw new Error(`cannot issue the service's own certificate: ${state.reason}`);
    await this.renew(state.issuer);
  }

  stop(): void {
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
  }

  private async renew(issuer?: Issuer): Promise<void> {
    const state = issuer ? { ok: true as const, issuer } : this.options.issuerStore.current();
    if (!state.ok) {
      this.options.logger.warn({ reason: state.reason }, "cannot renew the service's own certificate; keeping the current one");
      this.schedule(30_000);
      return;
    }
    const keyPair = await generateKeyPair();
    const leaf = await issueLeaf({
      issuer: state.issuer.prepared,
      publicKey: keyPair.publicKey,
      identity: this.name,
      spiffeId: spiffeId({ trustDomain: this.options.trustDomain, namespace: this.options.controlNamespace, serviceAccount: this.options.serviceAccount }),
      lifetimeMs: this.options.lifetimeMs,
      skewMs: this.options.skewMs,
    });
    const summary = await parseCertificate(leaf);
    const chain = [leaf, ...state.issuer.intermediates].map((c) => pemEncode("CERTIFICATE", c)).join("");
    this.latest = {
      certificate: Buffer.from(chain),
      privateKey: Buffer.from((await exportPrivateKey(keyPair.privateKey)) as string),
    };
    this.notAfter = summary.notAfter;
    this.options.logger.info(
      { identity: this.name, serial: summary.serialNumber, notAfter: summary.notAfter.toISOString(), issuer: state.issuer.subject },
      "serving certificate issued",
    );
    for (const listener of this.listeners) listener(this.latest);
    this.schedule(refreshDelayMs({ notAfter: summary.notAfter, now: new Date() }));
  }

  private schedule(delayMs: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.renew(), Math.max(1000, delayMs));
    this.timer.unref();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.listeners.add(listener);
    // grpc-js registers its own watcher only after this returns: a synchronous answer would be lost.
    setImmediate(() => {
      if (this.latest && this.listeners.has(listener)) listener(this.latest);
    });
  }
  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.listeners.delete(listener);
  }
  // No client certificates are requested: callers authenticate with their token.
  addCaCertificateListener(_listener: CaListener): void {}
  removeCaCertificateListener(_listener: CaListener): void {}
}
