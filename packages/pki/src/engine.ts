import * as pkijs from "pkijs";
import { crypto } from "./webcrypto.ts";

/** The pkijs engine over node's WebCrypto, passed explicitly to pkijs calls (never installed with setEngine). */
const ENGINE = new pkijs.CryptoEngine({ name: "meshtls-node-webcrypto", crypto: crypto as never });

export function engine(): pkijs.CryptoEngine {
  return ENGINE;
}
