// The OIDs this package speaks and their names: plain data, so that any module can name an algorithm without
// loading an ASN.1 library.

/** OIDs this package speaks; callers never see them. */
export const OID = {
  ecPublicKey: "1.2.840.10045.2.1",
  p256: "1.2.840.10045.3.1.7",
  p384: "1.3.132.0.34",
  p521: "1.3.132.0.35",
  rsaEncryption: "1.2.840.113549.1.1.1",
  rsaPss: "1.2.840.113549.1.1.10",
  ed25519: "1.3.101.112",
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  ecdsaSha512: "1.2.840.10045.4.3.4",
  sha1WithRsa: "1.2.840.113549.1.1.5",
  sha256WithRsa: "1.2.840.113549.1.1.11",
  sha384WithRsa: "1.2.840.113549.1.1.12",
  sha512WithRsa: "1.2.840.113549.1.1.13",
  ecdsaSha1: "1.2.840.10045.4.1",
  commonName: "2.5.4.3",
  extensionRequest: "1.2.840.113549.1.9.14",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  nameConstraints: "2.5.29.30",
  certificatePolicies: "2.5.29.32",
  policyConstraints: "2.5.29.36",
  inhibitAnyPolicy: "2.5.29.54",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  anyExtendedKeyUsage: "2.5.29.37.0",
} as const;

/** Human names for the algorithm OIDs that appear in summaries. */
export const SIGNATURE_NAMES: Record<string, string> = {
  [OID.ecdsaSha256]: "ecdsa-with-SHA256",
  [OID.ecdsaSha384]: "ecdsa-with-SHA384",
  [OID.ecdsaSha512]: "ecdsa-with-SHA512",
  [OID.ecdsaSha1]: "ecdsa-with-SHA1",
  [OID.sha1WithRsa]: "sha1WithRSAEncryption",
  [OID.sha256WithRsa]: "sha256WithRSAEncryption",
  [OID.sha384WithRsa]: "sha384WithRSAEncryption",
  [OID.sha512WithRsa]: "sha512WithRSAEncryption",
  [OID.rsaPss]: "rsassa-pss",
  [OID.ed25519]: "Ed25519",
};

export const CURVE_NAMES: Record<string, string> = {
  [OID.p256]: "P-256",
  [OID.p384]: "P-384",
  [OID.p521]: "P-521",
};
