#!/usr/bin/env node
// Fails (exit 1) listing every flag, MESHTLS_* variable, default, metric,
// metric label value, error code and gRPC status found in the sources but
// missing from docs/, and every link between the docs that does not resolve. Plain node, no dependencies: `node docs/check-reference.mjs`.
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const docsDir = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(docsDir, "..");
const read = (rel) => readFileSync(path.join(root, rel), "utf8");

/** Non-test TypeScript sources under `rel`, recursively. */
function sources(rel) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) {
        if (name !== "node_modules" && name !== "dist" && name !== "gen") walk(full);
      } else if (name.endsWith(".ts") && !name.endsWith(".test.ts") && !/test-(support|fixtures|helpers|mesh)\.ts$/.test(name)) {
        out.push(full);
      }
    }
  };
  walk(path.join(root, rel));
  return out;
}
const textOf = (files) => files.map((f) => readFileSync(f, "utf8")).join("\n");
const all = (re, text, group = 1) => [...new Set([...text.matchAll(re)].map((m) => m[group]))];

const missing = [];
let checked = 0;
const doc = (rel) => read(path.join("docs", rel));
const expect = (what, item, docRel, found) => {
  checked++;
  if (!found) missing.push(`${what} ${item} is not in docs/${docRel}`);
};
const hasCode = (text, item) => text.includes(`\`${item}`);

// Flags, environment variables and defaults of the three services.
for (const app of ["identity", "destination", "proxy"]) {
  const docRel = `reference/${app}.md`;
  const text = doc(docRel);
  const lines = text.split("\n");
  const source = textOf(sources(`apps/${app}/src`));
  for (const flag of all(/new Option\(\s*"(--[a-z0-9-]+)/g, source)) {
    expect("flag", flag, docRel, new RegExp("`" + flag + "[ `]").test(text));
  }
  for (const variable of all(/\b(MESHTLS_[A-Z0-9_]+)\b/g, source)) {
    expect("variable", variable, docRel, hasCode(text, variable));
  }
  for (const m of source.matchAll(/new Option\(\s*"(--[a-z0-9-]+)[^)]*\)[\s\S]{0,120}?\.default\("([^"]*)"\)/g)) {
    const [, flag, value] = m;
    const rows = lines.filter((l) => new RegExp("`" + flag + "[ `]").test(l));
    expect("default", `${flag}=${value}`, docRel, rows.some((l) => l.includes(`\`${value}\``)));
  }
}

// The CLI: every flag, and defaults given as durations.
{
  const docRel = "reference/cli.md";
  const text = doc(docRel);
  const lines = text.split("\n");
  const source = textOf(sources("apps/cli/src"));
  for (const flag of all(/\.(?:option|requiredOption)\(\s*"(--[a-z0-9-]+)/g, source)) {
    expect("flag", flag, docRel, new RegExp("`" + flag + "[ `]").test(text));
  }
  for (const m of source.matchAll(/\.option\(\s*"(--[a-z0-9-]+)[^"]*",\s*"[^"]*",\s*(?:duration,\s*)?parseDurationMs\("([^"]+)"\)/g)) {
    const [, flag, value] = m;
    const rows = lines.filter((l) => new RegExp("`" + flag + "[ `]").test(l));
    expect("default", `${flag}=${value}`, docRel, rows.some((l) => l.includes(`\`${value}\``)));
  }
  for (const variable of all(/\b(MESHTLS_[A-Z0-9_]+)\b/g, source)) {
    expect("variable", variable, docRel, hasCode(text, variable));
  }
}

// Metrics, and the label values that say why.
{
  const docRel = "reference/metrics.md";
  const text = doc(docRel);
  const source = textOf([...sources("packages"), ...sources("apps")]);
  for (const name of all(/new (?:Counter|Gauge|Histogram|Summary)\(\{[\s\S]{0,40}?name:\s*"([a-z_:]+)"/g, source)) {
    expect("metric", name, docRel, hasCode(text, name));
  }
  const tlsState = read("packages/proxy-core/src/tls-state.ts");
  const reasons = /type NoTlsReason =([\s\S]*?);/.exec(tlsState)?.[1] ?? "";
  for (const value of all(/"([a-z_]+)"/g, reasons)) expect("no_tls_reason", value, docRel, hasCode(text, value));
  for (const value of all(/tls: "([a-z_]+)"/g, tlsState)) expect("tls label value", value, docRel, text.includes(`\`${value}\``));
  const policy = read("packages/proxy-core/src/policy.ts");
  for (const value of all(/"([a-z_]+)"/g, /type DenyReason =([^;]*);/.exec(policy)?.[1] ?? "")) expect("deny reason", value, docRel, hasCode(text, value));
  const inbound = read("packages/proxy-core/src/inbound.ts");
  for (const value of all(/"([a-z_]+)"\)/g, [...inbound.matchAll(/fail\([^;]*;/g)].map((m) => m[0]).join("\n"))) {
    expect("inbound error label", value, docRel, hasCode(text, value));
  }
  for (const value of all(/new Rejected\("([a-z_]+)"/g, textOf(sources("packages/identity/src")))) {
    expect("issuer rejection reason", value, docRel, hasCode(text, value));
  }
}

// Error codes of every package and the CLI, and the gRPC statuses the services return.
{
  const docRel = "reference/errors.md";
  const text = doc(docRel);
  const errorFiles = readdirSync(path.join(root, "packages"))
    .map((p) => `packages/${p}/src/errors.ts`)
    .filter((f) => { try { return statSync(path.join(root, f)).isFile(); } catch { return false; } });
  errorFiles.push("apps/cli/src/errors.ts");
  for (const file of errorFiles) {
    for (const code of all(/"(ERR_[A-Z0-9_]+)"/g, read(file))) expect(`error code (${file})`, code, docRel, hasCode(text, code));
  }
  const services = textOf([...sources("packages/identity/src"), ...sources("packages/destination/src"), ...sources("apps/identity/src"), ...sources("apps/destination/src")]);
  for (const code of all(/\bstatus\.([A-Z_]+)\b/g, services)) expect("gRPC status", code, docRel, hasCode(text, code));
}

// Links between the docs: the file exists and the #anchor is one of its headings (GitHub slugs).
{
  const slug = (heading) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
  const mdFiles = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith(".md")) mdFiles.push(full);
    }
  };
  walk(docsDir);
  const anchorsOf = (file) => new Set([...readFileSync(file, "utf8").replace(/```[\s\S]*?```/g, "").matchAll(/^#+\s+(.*)$/gm)].map((m) => slug(m[1])));
  for (const file of mdFiles) {
    const text = readFileSync(file, "utf8").replace(/```[\s\S]*?```/g, "");
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue;
      const [rel, anchor] = target.split("#");
      const dest = rel === "" ? file : path.resolve(path.dirname(file), rel);
      const where = `link ${target} in docs/${path.relative(docsDir, file)}`;
      checked++;
      let exists = false;
      try { exists = statSync(dest).isFile(); } catch { exists = false; }
      if (!exists) missing.push(`${where}: no such file`);
      else if (anchor !== undefined && dest.endsWith(".md") && !anchorsOf(dest).has(anchor)) missing.push(`${where}: no heading #${anchor}`);
    }
  }
}

if (missing.length > 0) {
  console.error(`docs/check-reference: ${missing.length} of ${checked} items undocumented:`);
  for (const line of missing) console.error(`  - ${line}`);
  process.exit(1);
}
console.log(`docs/check-reference: all ${checked} flags, variables, defaults, metrics, label values, error codes, gRPC statuses and links are documented and resolve`);
