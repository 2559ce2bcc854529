import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// Images cannot be built here (no container runtime); what can be checked is checked: every file a stage
// copies exists, each image builds and runs the package it is for, the final stage runs as a non-root user
// without build tools, and the entrypoint starts.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const APPS = ["cli", "identity", "destination", "proxy", "injector"];

interface Stage {
  from: string;
  lines: string[];
}

function stagesOf(text: string): Stage[] {
  const joined = text.replace(/\\\n/g, " ");
  const stages: Stage[] = [];
  for (const line of joined.split("\n").map((l) => l.trim())) {
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("FROM ")) stages.push({ from: line.slice(5).trim(), lines: [] });
    else stages.at(-1)!.lines.push(line);
  }
  return stages;
}

describe.each(APPS)("apps/%s/Dockerfile", (app) => {
  const text = readFileSync(path.join(repoRoot, "apps", app, "Dockerfile"), "utf8");
  const stages = stagesOf(text);
  const name = (JSON.parse(readFileSync(path.join(repoRoot, "apps", app, "package.json"), "utf8")) as { name: string }).name;

  it("is multi-stage; the build stage copies files that exist and builds and deploys this app's package", () => {
    expect(stages.length).toBe(2);
    const [build] = stages as [Stage, Stage];
    expect(build.from).toMatch(/ AS build$/);
    const copies = build.lines.filter((l) => l.startsWith("COPY ") && !l.includes("--from="));
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      const sources = copy.split(/\s+/).slice(1, -1);
      for (const source of sources) expect(existsSync(path.join(repoRoot, source)), `${copy}: ${source}`).toBe(true);
    }
    const run = build.lines.find((l) => l.startsWith("RUN pnpm install"))!;
    expect(run).toContain("--frozen-lockfile");
    expect(run).toContain(`--filter=${name}...`);
    expect(run).toContain(`--filter ${name} deploy --prod /out`);
  });

  it("the final stage: only the deployed package, a non-root user, no compiler or package manager, an entrypoint that starts", () => {
    const final = stages[1]!;
    expect(final.from).not.toMatch(/ AS /);
    expect(final.from).not.toBe(stages[0]!.from.replace(/ AS build$/, ""));
    expect(final.lines).toContain("COPY --from=build /out ./");
    const user = final.lines.find((l) => l.startsWith("USER "))!.slice(5);
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(final.lines.join("\n")).not.toMatch(/build-essential|gcc|g\+\+|make|python/);
    if (app === "cli") expect(final.lines.join("\n")).toMatch(/rm -rf .*npm/);
    else expect(final.from).toMatch(/distroless/);
    const entrypoint = JSON.parse(final.lines.find((l) => l.startsWith("ENTRYPOINT "))!.slice(11)) as string[];
    expect(entrypoint.at(-1)).toBe("/app/dist/main.js");
    // /app is the deployed package: its dist/main.js is this app's built entry, and it starts.
    const main = path.join(repoRoot, "apps", app, "dist", "main.js");
    expect(existsSync(main), `${main} (build the app first)`).toBe(true);
    const help = spawnSync(process.execPath, [main, "--help"], { encoding: "utf8", timeout: 30_000 });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/Usage:/);
  });
});
