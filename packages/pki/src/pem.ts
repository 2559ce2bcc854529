import { PkiError } from "./errors.ts";
import { MAX_DER_BYTES, MAX_PEM_BLOCKS, MAX_PEM_CHARS } from "./limits.ts";

/** A PEM label this package reads as DER. */
export type DerLabel = "CERTIFICATE" | "CERTIFICATE REQUEST" | "PRIVATE KEY";

const BASE64_LINE = /^[A-Za-z0-9+/=]*$/;
const LABEL = /^[\x21-\x2c\x2e-\x7e](?:[\x20-\x2c\x2e-\x7e]*[\x21-\x2c\x2e-\x7e])?$/;
// Labels that mean the same DER type (OpenSSL and older tools write the alternatives).
const LABEL_ALIASES: Record<DerLabel, readonly string[]> = {
  CERTIFICATE: ["CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"],
  "CERTIFICATE REQUEST": ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"],
  "PRIVATE KEY": ["PRIVATE KEY"],
};

/** Encodes DER as a PEM block with 64-character lines and a trailing newline. */
export function pemEncode(label: string, der: Uint8Array): string {
  if (!LABEL.test(label)) throw new PkiError("ERR_PEM_INVALID", `PEM label ${JSON.stringify(label)} is not valid`);
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}${lines.length > 0 ? "\n" : ""}-----END ${label}-----\n`;
}

/**
 * Decodes every PEM block in `text` (text between blocks is ignored, as RFC 7468 allows).
 * Throws ERR_PEM_INVALID when there is no block, a block is unterminated, its END label differs,
 * its body is not base64, or it holds RFC 1421 headers (encrypted keys are not supported).
 */
export function pemDecode(text: string): { label: string; der: Uint8Array }[] {
  if (typeof text !== "string") throw new PkiError("ERR_PEM_INVALID", "PEM input must be a string");
  if (text.length > MAX_PEM_CHARS) throw new PkiError("ERR_PEM_INVALID", `PEM input is longer than ${MAX_PEM_CHARS} characters`);
  const lines = text.split(/\r?\n|\r/);
  const blocks: { label: string; der: Uint8Array }[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = (lines[i] ?? "").trim();
    i++;
    const begin = /^-----BEGIN (.*)-----$/.exec(line);
    if (!begin) continue;
    const label = begin[1] ?? "";
    if (label !== "" && !LABEL.test(label)) throw new PkiError("ERR_PEM_INVALID", `PEM label ${JSON.stringify(label)} is not valid`);
    const body: string[] = [];
    let ended = false;
    while (i < lines.length) {
      const l = (lines[i] ?? "").trim();
      i++;
      if (l.startsWith("-----END ")) {
        const end = /^-----END (.*)-----$/.exec(l);
        if (!end || end[1] !== label) {
          throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" ends with a different label`);
        }
        ended = true;
        break;
      }
      if (l.includes(":")) throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" has headers (encrypted or legacy PEM is not supported)`);
      if (!BASE64_LINE.test(l.replace(/\s+/g, ""))) throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" has a non-base64 character`);
      body.push(l.replace(/\s+/g, ""));
    }
    if (!ended) throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" has no END line`);
    const b64 = body.join("");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 === 1) {
      throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" is not valid base64`);
    }
    const der = new Uint8Array(Buffer.from(b64, "base64"));
    if (der.length === 0) throw new PkiError("ERR_PEM_INVALID", `PEM block "${label}" is empty`);
    blocks.push({ label, der });
    if (blocks.length > MAX_PEM_BLOCKS) throw new PkiError("ERR_PEM_INVALID", `PEM input has more than ${MAX_PEM_BLOCKS} blocks`);
  }
  if (blocks.length === 0) throw new PkiError("ERR_PEM_INVALID", "no PEM block found (expected -----BEGIN ...-----)");
  return blocks;
}

function looksLikePem(bytes: Uint8Array): boolean {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || bytes[i] === 0x09 || bytes[i] === 0x0a || bytes[i] === 0x0d)) i++;
  return bytes[i] === 0x2d; // '-'
}

function checkDer(der: Uint8Array, what: string): Uint8Array {
  if (der.length === 0) throw new PkiError("ERR_DER_INVALID", `${what} is empty`);
  if (der.length > MAX_DER_BYTES) throw new PkiError("ERR_DER_INVALID", `${what} is larger than ${MAX_DER_BYTES} bytes`);
  if (der[0] !== 0x30) throw new PkiError("ERR_DER_INVALID", `${what} is not a DER SEQUENCE`);
  return der;
}

function bytesToText(bytes: Uint8Array): string {
  if (bytes.length > MAX_PEM_CHARS) throw new PkiError("ERR_PEM_INVALID", `PEM input is longer than ${MAX_PEM_CHARS} bytes`);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/**
 * PEM or DER in, DER out. A string (or bytes starting with `-----`) is read as PEM and the first
 * block with `label` is returned (aliases such as `NEW CERTIFICATE REQUEST` are accepted); other bytes
 * are returned as DER after a shape check. Throws ERR_PEM_INVALID / ERR_DER_INVALID.
 */
export function toDer(input: string | Uint8Array, label: DerLabel): Uint8Array {
  if (input instanceof Uint8Array && !looksLikePem(input)) return checkDer(input, label);
  if (typeof input !== "string" && !(input instanceof Uint8Array)) {
    throw new PkiError("ERR_PEM_INVALID", "input must be a PEM string or DER bytes");
  }
  const text = typeof input === "string" ? input : bytesToText(input);
  const blocks = pemDecode(text);
  const wanted = LABEL_ALIASES[label];
  const block = blocks.find((b) => wanted.includes(b.label));
  if (!block) {
    throw new PkiError("ERR_PEM_INVALID", `no "${label}" PEM block found (found: ${blocks.map((b) => b.label).join(", ")})`);
  }
  return checkDer(block.der, label);
}

/** A PEM bundle (every CERTIFICATE block, in order) or one DER certificate, as a list of DER values. */
export function decodeCertificates(input: string | Uint8Array): Uint8Array[] {
  if (input instanceof Uint8Array && !looksLikePem(input)) return [checkDer(input, "CERTIFICATE")];
  if (typeof input !== "string" && !(input instanceof Uint8Array)) {
    throw new PkiError("ERR_PEM_INVALID", "input must be a PEM string or DER bytes");
  }
  const text = typeof input === "string" ? input : bytesToText(input);
  const certs = pemDecode(text)
    .filter((b) => LABEL_ALIASES.CERTIFICATE.includes(b.label))
    .map((b) => checkDer(b.der, "CERTIFICATE"));
  if (certs.length === 0) throw new PkiError("ERR_PEM_INVALID", "no CERTIFICATE PEM block found");
  return certs;
}
