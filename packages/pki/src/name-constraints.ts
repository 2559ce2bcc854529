// RFC 5280 4.2.1.10 name constraints over the names a certificate holds (SAN and subject).
import { children, expectTag, readTlv, whole } from "./der-reader.ts";
import type { GeneralNames } from "./general-names.ts";
import type { NameConstraints, Subtree } from "./x509.ts";

const DNS_LABEL = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/** A DNS reference or constraint name: dot-separated labels, no wildcard, no empty label. */
export function isValidDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split(".").every((l) => DNS_LABEL.test(l));
}

/** A presented SAN dNSName: a DNS name, optionally with `*.` as its whole left-most label. */
export function isValidPresentedDnsName(name: string): boolean {
  return name.startsWith("*.") ? isValidDnsName(name.slice(2)) && name.slice(2).includes(".") : isValidDnsName(name);
}

function withinDns(name: string, constraint: string): boolean {
  if (constraint === "") return true;
  const n = name.toLowerCase();
  const c = constraint.toLowerCase();
  return n === c || n.endsWith(`.${c}`);
}

/** Whether a presented DNS name (maybe a wildcard) could name something inside `constraint`. */
function dnsIntersects(name: string, constraint: string): boolean {
  if (!name.startsWith("*.")) return withinDns(name, constraint);
  const rest = name.slice(2).toLowerCase();
  const c = constraint.toLowerCase();
  if (withinDns(rest, c)) return true;
  // `*.rest` covers `x.rest`; the constraint is such a name (or under one).
  return c.endsWith(`.${rest}`) && c.slice(0, -rest.length - 1).length > 0;
}

/** Whether every name a presented DNS name covers lies inside `constraint`. */
function dnsContained(name: string, constraint: string): boolean {
  if (!name.startsWith("*.")) return withinDns(name, constraint);
  return withinDns(name.slice(2), constraint);
}

function isValidEmail(addr: string): boolean {
  const at = addr.indexOf("@");
  return at > 0 && at === addr.lastIndexOf("@") && isValidDnsName(addr.slice(at + 1));
}

function isValidEmailConstraint(c: string): boolean {
  if (c.includes("@")) return isValidEmail(c);
  if (c.startsWith(".")) return isValidDnsName(c.slice(1));
  return isValidDnsName(c);
}

function withinEmail(addr: string, c: string): boolean {
  const at = addr.lastIndexOf("@");
  const domain = addr.slice(at + 1).toLowerCase();
  if (c.includes("@")) {
    const cat = c.lastIndexOf("@");
    return addr.slice(0, at) === c.slice(0, cat) && domain === c.slice(cat + 1).toLowerCase();
  }
  if (c.startsWith(".")) return domain.endsWith(c.toLowerCase());
  return domain === c.toLowerCase();
}

function uriHost(uri: string): string | undefined {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)/.exec(uri);
  const host = m?.[1];
  return host === undefined || host === "" ? undefined : host;
}

function withinUri(uri: string, c: string): boolean {
  const host = uriHost(uri);
  if (host === undefined) return false;
  if (c.startsWith(".")) return host.toLowerCase().endsWith(c.toLowerCase());
  return host.toLowerCase() === c.toLowerCase();
}

function isContiguousMask(mask: Uint8Array): boolean {
  let seenZero = false;
  for (const byte of mask) {
    for (let bit = 7; bit >= 0; bit--) {
      const one = (byte >> bit) & 1;
      if (one && seenZero) return false;
      if (!one) seenZero = true;
    }
  }
  return true;
}

function withinIp(ip: Uint8Array, c: Subtree): boolean {
  if (!c.ip || !c.mask || ip.length !== c.ip.length) return false;
  for (let i = 0; i < ip.length; i++) if (((ip[i] ?? 0) & (c.mask[i] ?? 0)) !== ((c.ip[i] ?? 0) & (c.mask[i] ?? 0))) return false;
  return true;
}

/** The DER of each RDN of a Name, or undefined when it is not one DER SEQUENCE (the caller fails closed). */
function rdnItems(der: Uint8Array): Uint8Array[] | undefined {
  try {
    const name = expectTag(readTlv(der, 0), 0x30, "Name");
    return children(der, name).map((rdn) => whole(der, rdn));
  } catch {
    return undefined;
  }
}

function withinDn(name: Uint8Array, c: Uint8Array): boolean {
  const n = rdnItems(name);
  const k = rdnItems(c);
  if (!n || !k || k.length > n.length) return false;
  return k.every((rdn, i) => {
    const other = n[i];
    return other !== undefined && other.length === rdn.length && other.every((b, j) => b === rdn[j]);
  });
}

/** Checks a constraint subtree for well-formedness; returns a reason when it is malformed. */
function subtreeProblem(s: Subtree): string | undefined {
  if (s.invalid) return s.invalid;
  switch (s.kind) {
    case "dns":
      return s.value === "" || isValidDnsName(s.value) ? undefined : `dNSName constraint "${s.value}" is not a DNS name`;
    case "email":
      return isValidEmailConstraint(s.value) ? undefined : `rfc822Name constraint "${s.value}" is malformed`;
    case "uri":
      return s.value.startsWith(".") ? (isValidDnsName(s.value.slice(1)) ? undefined : `URI constraint "${s.value}" is malformed`) : isValidDnsName(s.value) ? undefined : `URI constraint "${s.value}" is malformed`;
    case "ip":
      return s.mask && isContiguousMask(s.mask) ? undefined : "iPAddress constraint mask is not a CIDR prefix";
    case "dn":
      return s.der !== undefined && rdnItems(s.der) === undefined ? "directoryName constraint is not a DER Name" : undefined;
    default:
      return undefined;
  }
}

/** The names a certificate presents, for constraint checking. */
export interface ConstrainedNames {
  san: GeneralNames | undefined;
  subjectDer: Uint8Array;
  subjectEmpty: boolean;
}

/** Most (name × constraint) comparisons for one certificate against one CA's constraints, as webpki bounds them. */
export const MAX_NAME_CONSTRAINT_CHECKS = 4096;

/** Returns why `names` violate `nc`, or undefined when they satisfy it. */
export function checkNameConstraints(nc: NameConstraints, names: ConstrainedNames): string | undefined {
  if (nc.invalid) return nc.invalid;
  const all = [...(nc.permitted ?? []), ...(nc.excluded ?? [])];
  const san = names.san;
  const nameCount = 1 + (san ? san.dns.length + san.uri.length + san.ip.length + san.email.length + san.directoryNames.length + san.other : 0);
  if (nameCount * all.length > MAX_NAME_CONSTRAINT_CHECKS) {
    return `checking ${nameCount} names against ${all.length} constraints exceeds the limit of ${MAX_NAME_CONSTRAINT_CHECKS} comparisons`;
  }
  for (const s of all) {
    const problem = subtreeProblem(s);
    if (problem) return problem;
  }
  if (san && san.invalid.length > 0) return `subjectAltName is malformed: ${san.invalid.join("; ")}`;
  const dns = san?.dns ?? [];
  for (const d of dns) if (!isValidPresentedDnsName(d)) return `dNSName "${d}" is malformed`;
  for (const e of san?.email ?? []) if (!isValidEmail(e)) return `rfc822Name "${e}" is malformed`;
  const permitted = nc.permitted ?? [];
  const excluded = nc.excluded ?? [];
  const dirNames = [...(names.subjectEmpty ? [] : [names.subjectDer]), ...(san?.directoryNames ?? [])];

  const kinds = (list: Subtree[], kind: Subtree["kind"]) => list.filter((s) => s.kind === kind);
  type Check = { kind: Subtree["kind"]; values: string[]; contained: (v: string, s: Subtree) => boolean; intersects: (v: string, s: Subtree) => boolean };
  const ipText = (san?.ipBytes ?? []).map((b) => Buffer.from(b).toString("hex"));
  const fromHex = (v: string) => new Uint8Array(Buffer.from(v, "hex"));
  const checks: Check[] = [
    { kind: "dns", values: dns, contained: (v, s) => dnsContained(v, s.value), intersects: (v, s) => dnsIntersects(v, s.value) },
    { kind: "email", values: san?.email ?? [], contained: (v, s) => withinEmail(v, s.value), intersects: (v, s) => withinEmail(v, s.value) },
    { kind: "uri", values: san?.uri ?? [], contained: (v, s) => withinUri(v, s.value), intersects: (v, s) => withinUri(v, s.value) },
    { kind: "ip", values: ipText, contained: (v, s) => withinIp(fromHex(v), s), intersects: (v, s) => withinIp(fromHex(v), s) },
    {
      kind: "dn",
      values: dirNames.map((d) => Buffer.from(d).toString("hex")),
      contained: (v, s) => s.der !== undefined && withinDn(fromHex(v), s.der),
      // A name that cannot be read is taken to be in every excluded subtree (fail closed).
      intersects: (v, s) => s.der !== undefined && (rdnItems(fromHex(v)) === undefined || withinDn(fromHex(v), s.der)),
    },
  ];
  for (const check of checks) {
    const perm = kinds(permitted, check.kind);
    const excl = kinds(excluded, check.kind);
    for (const v of check.values) {
      const shown = check.kind === "ip" || check.kind === "dn" ? check.kind : `"${v}"`;
      if (excl.some((s) => check.intersects(v, s))) return `${check.kind} name ${shown} is in an excluded subtree`;
      if (perm.length > 0 && !perm.some((s) => check.contained(v, s))) return `${check.kind} name ${shown} is outside the permitted subtrees`;
    }
  }
  // Constraints on name forms this verifier does not process: reject any certificate that has such names.
  if ((san?.other ?? 0) > 0 && all.some((s) => s.kind === "other")) return "certificate has names of a form whose constraints are not supported";
  return undefined;
}
