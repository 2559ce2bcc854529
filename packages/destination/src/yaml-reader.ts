import { ApiError, ipAddressToString, ipToIpAddress } from "@meshtls/api";
import { isDnsLabel } from "@meshtls/pki";
import { isAlias, isMap, isScalar, isSeq, type LineCounter, type Node, type YAMLMap } from "yaml";
import { DestinationError } from "./errors.js";

type Where = { line?: number; column?: number };

/** Reads checked values out of a parsed YAML document; every failure names file, line and column. */
export class Reader {
  constructor(
    private readonly file: string,
    private readonly lines: LineCounter,
  ) {}

  where(node: Node | null | undefined): Where {
    const offset = node?.range?.[0];
    if (offset === undefined) return {};
    const pos = this.lines.linePos(offset);
    return { line: pos.line, column: pos.col };
  }

  fail(node: Node | null | undefined, reason: string): never {
    throw new DestinationError("ERR_REGISTRY_INVALID", reason, { file: this.file, ...this.where(node) });
  }

  map(node: unknown, what: string, allowed: readonly string[]): YAMLMap<unknown, unknown> {
    if (isAlias(node)) this.fail(node, `${what}: YAML aliases are not supported`);
    if (!isMap(node)) this.fail(node as Node, `${what} must be a mapping`);
    for (const pair of node.items) {
      const key = pair.key;
      const name = isScalar(key) ? String(key.value) : "";
      if (!allowed.includes(name)) {
        this.fail(key as Node, `${what}: unknown field ${JSON.stringify(name)} (expected one of ${allowed.join(", ")})`);
      }
    }
    return node;
  }

  seq(node: unknown, what: string): Node[] {
    if (isAlias(node)) this.fail(node, `${what}: YAML aliases are not supported`);
    if (!isSeq(node)) this.fail(node as Node, `${what} must be a list`);
    return node.items as Node[];
  }

  field(map: YAMLMap<unknown, unknown>, key: string): Node | undefined {
    const value = map.get(key, true) as Node | undefined;
    if (value !== undefined && isAlias(value)) this.fail(value, `${key}: YAML aliases are not supported`);
    return value;
  }

  string(map: YAMLMap<unknown, unknown>, key: string, what: string): string | undefined {
    const node = this.field(map, key);
    if (node === undefined || (isScalar(node) && node.value === null)) return undefined;
    if (!isScalar(node) || typeof node.value !== "string" || node.value === "") {
      this.fail(node ?? map, `${what}.${key} must be a non-empty string`);
    }
    return node.value;
  }

  label(map: YAMLMap<unknown, unknown>, key: string, what: string): string | undefined {
    const value = this.string(map, key, what);
    if (value !== undefined && !isDnsLabel(value)) {
      this.fail(this.field(map, key), `${what}.${key} ${JSON.stringify(value)} is not a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63)`);
    }
    return value;
  }

  int(map: YAMLMap<unknown, unknown>, key: string, what: string, min: number, max: number): number | undefined {
    const node = this.field(map, key);
    if (node === undefined || (isScalar(node) && node.value === null)) return undefined;
    if (!isScalar(node) || typeof node.value !== "number" || !Number.isInteger(node.value) || node.value < min || node.value > max) {
      this.fail(node, `${what}.${key} must be an integer in ${min}..${max}`);
    }
    return node.value;
  }

  bool(map: YAMLMap<unknown, unknown>, key: string, what: string): boolean | undefined {
    const node = this.field(map, key);
    if (node === undefined || (isScalar(node) && node.value === null)) return undefined;
    if (!isScalar(node) || typeof node.value !== "boolean") this.fail(node, `${what}.${key} must be true or false`);
    return node.value;
  }

  ip(map: YAMLMap<unknown, unknown>, key: string, what: string): string | undefined {
    const value = this.string(map, key, what);
    if (value === undefined) return undefined;
    try {
      return ipAddressToString(ipToIpAddress(value));
    } catch (error) {
      if (error instanceof ApiError) this.fail(this.field(map, key), `${what}.${key} ${JSON.stringify(value)} is not an IP address`);
      throw error;
    }
  }
}

/** A mapping of strings to strings (labels). */
export function readStringMap(r: Reader, node: Node | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (node === undefined || (isScalar(node) && node.value === null)) return out;
  if (isAlias(node)) r.fail(node, `${what}: YAML aliases are not supported`);
  if (!isMap(node)) r.fail(node, `${what} must be a mapping of strings`);
  for (const pair of node.items) {
    const key = pair.key as Node;
    const value = pair.value as Node | null;
    if (!isScalar(key) || typeof key.value !== "string" || key.value === "") r.fail(key, `${what}: keys must be non-empty strings`);
    if (!isScalar(value) || (typeof value.value !== "string" && typeof value.value !== "number" && typeof value.value !== "boolean")) {
      r.fail(value ?? key, `${what}.${String(key.value)} must be a string`);
    }
    out[key.value] = String(value.value);
  }
  return out;
}

/** A list of non-empty strings. */
export function readStringList(r: Reader, node: Node | undefined, what: string): { values: string[]; nodes: Node[] } {
  if (node === undefined || (isScalar(node) && node.value === null)) return { values: [], nodes: [] };
  const nodes = r.seq(node, what);
  const values = nodes.map((item, i) => {
    if (!isScalar(item) || typeof item.value !== "string" || item.value === "") r.fail(item, `${what}[${i}] must be a non-empty string`);
    return item.value;
  });
  return { values, nodes };
}
