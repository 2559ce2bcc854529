// Strict DER parsing with asn1js, for the key import paths (PKCS#8, SEC1). Certificates, CSRs and SPKI are read by
// der-reader.ts, so that the proxy, which never imports keys, does not load asn1js.
import * as asn1js from "asn1js";
import { PkiError, type PkiErrorCode } from "./errors.ts";
import { MAX_DER_BYTES } from "./limits.ts";

/** Parses exactly one DER value (no trailing bytes), throwing `code` with `what` in the message. */
export function parseDer(bytes: Uint8Array, what: string, code: PkiErrorCode = "ERR_DER_INVALID"): asn1js.AsnType {
  if (!(bytes instanceof Uint8Array)) throw new PkiError(code, `${what} must be bytes`);
  if (bytes.length === 0) throw new PkiError(code, `${what} is empty`);
  if (bytes.length > MAX_DER_BYTES) throw new PkiError(code, `${what} is larger than ${MAX_DER_BYTES} bytes`);
  let parsed: ReturnType<typeof asn1js.fromBER>;
  try {
    parsed = asn1js.fromBER(bytes);
  } catch (err) {
    throw new PkiError(code, `${what} is not valid DER`, { cause: err });
  }
  if (parsed.offset === -1 || parsed.result.error) {
    throw new PkiError(code, `${what} is not valid DER: ${parsed.result.error || "parse error"}`);
  }
  if (parsed.offset !== bytes.length) {
    throw new PkiError(code, `${what} has ${bytes.length - parsed.offset} trailing bytes after the DER value`);
  }
  return parsed.result;
}
