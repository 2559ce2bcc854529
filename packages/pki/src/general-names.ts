import { children, content, readTlv } from "./der-reader.ts";

/** GeneralNames decoded by kind (RFC 5280 4.2.1.6). Invalid entries are kept in `invalid` so checks can fail closed. */
export interface GeneralNames {
  dns: string[];
  uri: string[];
  /** IP addresses as text (dotted IPv4 or RFC 5952 IPv6). */
  ip: string[];
  ipBytes: Uint8Array[];
  email: string[];
  /** DER of each directoryName. */
  directoryNames: Uint8Array[];
  /** Count of otherName, x400Address, ediPartyName and registeredID entries. */
  other: number;
  /** Human descriptions of malformed entries (non-ASCII IA5String, bad IP length). */
  invalid: string[];
}

export function emptyGeneralNames(): GeneralNames {
  return { dns: [], uri: [], ip: [], ipBytes: [], email: [], directoryNames: [], other: 0, invalid: [] };
}

/** Formats 4 or 16 address bytes as text. */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  // RFC 5952: compress the longest run (length >= 2) of zero groups.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === "0") j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart === -1) return groups.join(":");
  return `${groups.slice(0, bestStart).join(":")}::${groups.slice(bestStart + bestLen).join(":")}`;
}

/** Parses IPv4 dotted or IPv6 text into bytes, or undefined if it is not an IP address. */
export function parseIp(text: string): Uint8Array | undefined {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) {
    const parts = text.split(".").map(Number);
    if (parts.some((p) => p > 255)) return undefined;
    return new Uint8Array(parts);
  }
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !text.includes(":")) return undefined;
  let head = text;
  let tail4: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    const v4 = parseIp(text.slice(lastColon + 1));
    if (!v4) return undefined;
    tail4 = Array.from(v4);
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = head.split("::");
  if (halves.length > 2) return undefined;
  const parse = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = parse(halves[0] ?? "");
  const right = halves.length === 2 ? parse(halves[1] ?? "") : [];
  if (!left || !right) return undefined;
  const missing = 8 - left.length - right.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...left, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...right];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  if (tail4.length === 4) bytes.set(tail4, 12);
  return bytes;
}

/** Decodes GeneralNames from DER bytes with the fast reader . */
export function decodeGeneralNamesDer(der: Uint8Array): GeneralNames {
  const out = emptyGeneralNames();
  const outer = readTlv(der, 0);
  if (outer.tag !== 0x30 || outer.end !== der.length) {
    out.invalid.push("GeneralNames is not a single SEQUENCE");
    return out;
  }
  for (const t of children(der, outer)) {
    const body = content(der, t);
    const ascii = () => {
      for (const b of body) if (b > 0x7e || b < 0x20) return undefined;
      return Buffer.from(body).toString("latin1");
    };
    switch (t.tag) {
      case 0x81:
      case 0x82:
      case 0x86: {
        const v = ascii();
        const kind = t.tag === 0x81 ? "rfc822Name" : t.tag === 0x82 ? "dNSName" : "uniformResourceIdentifier";
        if (v === undefined) out.invalid.push(`${kind} is not ASCII`);
        else (t.tag === 0x81 ? out.email : t.tag === 0x82 ? out.dns : out.uri).push(v);
        break;
      }
      case 0x87:
        if (body.length !== 4 && body.length !== 16) out.invalid.push("iPAddress is not 4 or 16 bytes");
        else {
          out.ipBytes.push(new Uint8Array(body));
          out.ip.push(formatIp(body));
        }
        break;
      case 0xa4:
        out.directoryNames.push(new Uint8Array(body));
        break;
      default:
        if ((t.tag & 0xc0) !== 0x80) out.invalid.push("GeneralName has a non-context tag");
        else out.other++;
    }
  }
  return out;
}
