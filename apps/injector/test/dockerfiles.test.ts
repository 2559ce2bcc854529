import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildInstallManifests } from "@meshtls/kubernetes";
import { describe, expect, it } from "vitest";

// Images cannot be built here (no container runtime); what can be checked is checked on apps/Dockerfile, the one
// Dockerfile of every image: every file the build stage copies exists, it builds and deploys the package of the folder
// APP names, each app's final stage runs as a non-root user without build tools, the entrypoint starts, and the image
// names `meshtls install` uses are exactly the apps it can build.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const APPS = readdirSync(path.join(repoRoot, "apps")).filter((app) => existsSync(path.join(repoRoot, "apps", app, "package.json")));

interface Stage {
  from: string;
  name?: string;
  lines: string[];
}

function stagesOf(text: string): { globalArgs: string[]; stages: Stage[] } {
  const joined = text.replace(/\\\n/g, " ");
  const globalArgs: string[] = [];
  const stages: Stage[] = [];
  for (const line of joined.split("\n").map((l) => l.trim())) {
    if (line === "" || line.startsWith("#")) continue;
    const from = /^FROM (\S+)(?: AS (\S+))?$/.exec(line);
    if (from) stages.push({ from: from[1]!, ...(from[2] === undefined ? {} : { name: from[2] }), lines: [] });
    else if (stages.length === 0) globalArgs.push(line);
    else stages.at(-1)!.lines.push(line);
  }
  return { globalArgs, stages };
}

const { globalArgs, stages } = stagesOf(readFileSync(path.join(repoRoot, "apps", "Dockerfile"), "utf8"));
const stageNamed = (name: string): Stage | undefined => stages.find((s) => s.name === name);

/** The final image of APP=app: its stages from the base image up (inherited first), as docker resolves `FROM <stage>`. */
function imageOf(app: string): { base: string; lines: string[] } {
  const chain: Stage[] = [];
  let stage: Stage | undefined = { ...stages.at(-1)!, from: stages.at(-1)!.from.replace("${APP}", app) };
  while (stage !== undefined) {
    chain.unshift(stage);
    stage = stageNamed(stage.from);
  }
  return { base: chain[0]!.from, lines: chain.flatMap((s) => s.lines) };
}

describe("apps/Dockerfile", () => {
  it("takes the app as ARG APP and builds and deploys that folder's package from a build stage whose copies exist", () => {
    expect(globalArgs).toContain("ARG APP");
    const build = stageNamed("build")!;
    expect(build.lines).toContain("ARG APP");
    const copies = build.lines.filter((l) => l.startsWith("COPY ") && !l.includes("--from="));
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      for (const source of copy.split(/\s+/).slice(1, -1)) expect(existsSync(path.join(repoRoot, source)), `${copy}: ${source}`).toBe(true);
    }
    const run = build.lines.find((l) => l.startsWith("RUN ") && l.includes("pnpm install"))!;
    expect(run).toContain('test -f "apps/${APP}/package.json"');
    expect(run).toContain("--frozen-lockfile");
    expect(run).toContain('--filter "{./apps/${APP}}..." run build');
    expect(run).toContain('--filter "./apps/${APP}" deploy --prod /out');
    expect(stages.at(-1)!.from).toBe("runtime-${APP}");
  });

  it("`meshtls install` names exactly the images it can build: <registry>/<app>:<tag>, one per app with a runtime stage", () => {
    const manifests = JSON.stringify(buildInstallManifests({ registry: "registry.test", tag: "t1", trustAnchorsPem: "-", issuer: { from: "cert-manager" } }));
    const images = new Set([...manifests.matchAll(/registry\.test\/([a-z0-9-]+):t1/g)].map((m) => m[1]!));
    expect([...images].sort()).toEqual([...APPS].sort());
    for (const image of images) expect(stageNamed(`runtime-${image}`), `stage runtime-${image}`).toBeDefined();
  });
});

describe.each(APPS)("the %s image", (app) => {
  it("the final stage: only the deployed package, a non-root user, no compiler or package manager, an entrypoint that starts", () => {
    const image = imageOf(app);
    expect(image.base).not.toBe(stageNamed("build")!.from);
    expect(image.lines).toContain("COPY --from=build /out ./");
    const user = image.lines.filter((l) => l.startsWith("USER ")).at(-1)!.slice(5);
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    if (app === "proxy") expect(user).toBe("2102:2102");
    expect(image.lines.join("\n")).not.toMatch(/build-essential|gcc|g\+\+|make|python/);
    if (app === "cli") expect(image.lines.join("\n")).toMatch(/iptables[\s\S]*rm -rf .*npm/);
    else expect(image.base).toMatch(/distroless/);
    const entrypoint = JSON.parse(image.lines.find((l) => l.startsWith("ENTRYPOINT "))!.slice(11)) as string[];
    expect(entrypoint.at(-1)).toBe("/app/dist/main.js");
    // /app is the deployed package: its dist/main.js is this app's built entry, and it starts.
    const main = path.join(repoRoot, "apps", app, "dist", "main.js");
    expect(existsSync(main), `${main} (build the app first)`).toBe(true);
    const help = spawnSync(process.execPath, [main, "--help"], { encoding: "utf8", timeout: 30_000 });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/Usage:/);
  });
});
