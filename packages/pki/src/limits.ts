/** Largest single DER object (certificate, CSR, key) accepted by the parsers: 64 KiB. */
export const MAX_DER_BYTES = 64 * 1024;
/** Largest PEM text or bundle accepted: 1 MiB. */
export const MAX_PEM_CHARS = 1024 * 1024;
/** Most PEM blocks read from one bundle. */
export const MAX_PEM_BLOCKS = 256;
