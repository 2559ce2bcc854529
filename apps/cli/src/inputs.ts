import { decodeCertificates, importPrivateKey, parseCertificate, type CertificateSummary, type CryptoKeyPair } from "@meshtls/pki";
import { CliError, describeError } from "./errors.ts";
import { readInputFile } from "./files.ts";

/** Reads the first certificate of a PEM bundle or DER file; ERR_INPUT if there is none. */
export async function readCertificate(file: string, what: string): Promise<Uint8Array> {
  const certificates = await readCertificates(file, what);
  return certificates[0]!;
}

/** Reads every certificate of a PEM bundle or DER file; ERR_INPUT if there is none. */
export async function readCertificates(file: string, what: string): Promise<Uint8Array[]> {
  const data = await readInputFile(file, what);
  let certificates: Uint8Array[];
  try {
    certificates = decodeCertificates(data);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${what} ${file} is not a PEM or DER certificate: ${describeError(error)}`, { cause: error });
  }
  if (certificates.length === 0) {
    throw new CliError("ERR_INPUT", `${what} ${file} contains no certificate`);
  }
  return certificates;
}

/** Reads a private key (PKCS#8 PEM/DER or SEC1 PEM); ERR_INPUT with the reason otherwise. */
export async function readPrivateKey(file: string, what: string): Promise<CryptoKeyPair> {
  const data = await readInputFile(file, what);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(data);
  try {
    return await importPrivateKey(text.includes("-----BEGIN") ? text : data);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${what} ${file} is not a usable private key: ${describeError(error)}`, { cause: error });
  }
}

/** parseCertificate with the file named in the error. */
export async function summarizeCertificate(der: Uint8Array, where: string): Promise<CertificateSummary> {
  try {
    return await parseCertificate(der);
  } catch (error) {
    throw new CliError("ERR_INPUT", `${where}: not a valid certificate: ${describeError(error)}`, { cause: error });
  }
}
