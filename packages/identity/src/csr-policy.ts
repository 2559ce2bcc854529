import type { CsrSummary } from "@meshtls/pki";
import { IdentityError } from "./errors.ts";

/**
 * The CSR checks of ARCHITECTURE.md, all of them, in this order: key type
 * (ECDSA, named curve, P-256), self-signature, SAN kinds (no IP, email or
 * other names), exactly one DNS SAN equal to the identity, CN empty or equal,
 * URI SAN only the identity's SPIFFE ID. Throws `ERR_CSR_REJECTED` with a
 * message that says what to change.
 */
export function checkCsr(csr: CsrSummary, expected: { identity: string; spiffeId: string }): void {
  const reject = (message: string): never => {
    throw new IdentityError("ERR_CSR_REJECTED", message);
  };
  const { publicKey, san } = csr;
  if (publicKey.algorithm !== "ECDSA") {
    const size = publicKey.bits === undefined ? "" : ` ${publicKey.bits}-bit`;
    reject(`CSR key is${size} ${publicKey.algorithm}; meshtls requires an ECDSA P-256 key`);
  }
  if (!publicKey.namedCurve) {
    reject("CSR key has explicit EC curve parameters; encode the key with the named curve P-256 (prime256v1)");
  }
  if (publicKey.curve !== "P-256") {
    reject(`CSR key is on curve ${publicKey.curve ?? "unknown"}; meshtls requires P-256`);
  }
  if (!csr.signatureValid) {
    reject("CSR self-signature does not verify: the request was altered or signed with a different key");
  }
  if (san.ip.length > 0) reject(`CSR has IP SAN ${san.ip.join(", ")}; only the identity name is allowed`);
  if (san.email.length > 0) reject(`CSR has email SAN ${san.email.join(", ")}; only the identity name is allowed`);
  if (san.other > 0) reject("CSR has SANs of other kinds (otherName, directoryName, ...); only the identity name is allowed");
  if (san.dns.length !== 1) {
    reject(
      `CSR must have exactly one DNS SAN, the identity ${expected.identity}; it has ${san.dns.length}` +
        (san.dns.length > 0 ? `: ${san.dns.join(", ")}` : ""),
    );
  }
  if (san.dns[0] !== expected.identity) {
    reject(`CSR DNS SAN ${JSON.stringify(san.dns[0])} is not the requested identity ${JSON.stringify(expected.identity)}`);
  }
  const cn = csr.subject.commonName;
  if (cn !== undefined && cn !== "" && cn !== expected.identity) {
    reject(`CSR subject CN ${JSON.stringify(cn)} is neither empty nor the requested identity ${JSON.stringify(expected.identity)}`);
  }
  for (const uri of san.uri) {
    if (uri !== expected.spiffeId) {
      reject(`CSR URI SAN ${JSON.stringify(uri)} is not the SPIFFE ID ${expected.spiffeId} of this identity; omit it or use that ID`);
    }
  }
  if (san.uri.length > 1) reject(`CSR has ${san.uri.length} URI SANs; at most one, the SPIFFE ID ${expected.spiffeId}, is allowed`);
}
