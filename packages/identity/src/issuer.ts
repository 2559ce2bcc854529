import type { CryptoKey, PreparedIssuer } from "@meshtls/pki";

/** A validated issuer: a CA certificate and key that chain to the trust anchors. */
export interface Issuer {
  certificate: Uint8Array;
  privateKey: CryptoKey;
  /** The certificate and key parsed once, for `issueLeaf`. */
  prepared: PreparedIssuer;
  /** Intermediates to send with each leaf: the issuer first, up towards (never including) the anchor; DER. */
  intermediates: Uint8Array[];
  notBefore: Date;
  /** The issuer certificate's notAfter. */
  notAfter: Date;
  /** The earliest notAfter on the issuer's path to its anchor (anchor included): issuance stops then. */
  usableUntil: Date;
  subject: string;
  serialNumber: string;
  fingerprintSha256: string;
  /** Where it was loaded from, for logs: the files of an issuer folder, or what a non-file source says (a Vault path, a Secret's name). */
  origin: string;
}

/** What the Certify handler asks for: an issuer to sign with, or why there is none. */
export type IssuerState = { ok: true; issuer: Issuer } | { ok: false; reason: string };

/** The source of the current issuer. Replaceable (a Vault or KMS backed store implements this). */
export interface IssuerSource {
  current(): IssuerState;
}
