import { parseCertificate, PkiError } from "@meshtls/pki";

/**
 * The DNS and URI SANs of a DER certificate, read from the certificate itself.
 * Never from node's `subjectaltname` text: its quoting of values that hold
 * ", " can be confused for more entries (the shape of CVE-2021-44532). A
 * certificate that cannot be parsed names nothing, so it matches no identity.
 */
export function subjectAltNames(certificate: Uint8Array | undefined): { dns: string[]; uri: string[] } {
  if (certificate === undefined) return { dns: [], uri: [] };
  try {
    const { san } = parseCertificate(certificate);
    return { dns: san.dns, uri: san.uri };
  } catch (error) {
    if (error instanceof PkiError) return { dns: [], uri: [] };
    throw error;
  }
}

/** Whether a DNS or URI SAN of a DER certificate equals `identity` exactly. */
export function namesIdentity(certificate: Uint8Array | undefined, identity: string): boolean {
  const names = subjectAltNames(certificate);
  return names.dns.includes(identity) || names.uri.includes(identity);
}
