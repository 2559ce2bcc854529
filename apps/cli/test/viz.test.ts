import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalMesh, Workload } from "../src/demo/mesh.ts";
import type { EdgeReport } from "../src/mesh/edges.ts";
import { startProcess, type ManagedProcess } from "../src/mesh/supervisor.ts";
import { appRoot, cliBin, runCli } from "./helpers.ts";
import { eventually, startLocalMesh, startUnmeshedClient } from "./mesh-helpers.ts";

/** Where the screenshot is kept after the run (git ignores `.tmp/`). */
const ARTIFACTS = path.join(appRoot, ".tmp", "test-artifacts");

interface GraphEdge {
  source: string;
  target: string;
  state: string;
  label: string;
}

// Page code as strings, evaluated in the page: this file is typed without the DOM library.
const NODES = "JSON.stringify(viz.cy.nodes().map((n) => n.id()).sort())";
const EDGES = "JSON.stringify(viz.cy.edges().map((e) => ({ source: e.data('source'), target: e.data('target'), state: e.data('state'), label: e.data('label') })))";

async function graph(page: Page): Promise<{ nodes: string[]; edges: GraphEdge[] }> {
  return { nodes: JSON.parse((await page.evaluate(NODES)) as string) as string[], edges: JSON.parse((await page.evaluate(EDGES)) as string) as GraphEdge[] };
}

describe("meshtls viz in a real chromium: the mesh as a graph, live tap, the edges table", () => {
  let cleanup: () => Promise<void>;
  let mesh: LocalMesh;
  let api: Workload;
  let unmeshed: ManagedProcess | undefined;
  let viz: ManagedProcess | undefined;
  let url: string;
  let browser: BrowserContext | undefined;
  let userDataDir: string;
  let page: Page;
  const consoleErrors: string[] = [];
  const requests: string[] = [];

  beforeAll(async () => {
    ({ mesh, cleanup } = await startLocalMesh());
    api = await mesh.startWorkload({ name: "api", ip: "127.0.1.72" });
    unmeshed = startUnmeshedClient("127.0.1.73", api.inbound);
    await unmeshed.waitFor((l) => l.msg === "started", { timeoutMs: 20_000, what: "started" });
    // Only api's proxy is read: a meshed client's edge is seen from api's inbound side (its client_id).
    viz = startProcess({ name: "viz", file: process.execPath, args: [cliBin, "viz", "--proxy-admin", api.admin, "--listen", "127.0.0.1:0", "--interval", "500ms"] });
    url = String((await viz.waitFor((l) => l.msg === "listening", { timeoutMs: 20_000, what: "listening" })).url);
    userDataDir = await mkdtemp(path.join(os.tmpdir(), "meshtls-chromium-"));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: "/usr/bin/chromium",
      viewport: { width: 1400, height: 1000 },
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(e.message));
    page.on("request", (r) => requests.push(r.url()));
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    await viz?.stop();
    await unmeshed?.stop();
    await mesh?.stop();
    if (userDataDir !== undefined) await rm(userDataDir, { recursive: true, force: true });
    await cleanup?.();
  });

  it("listens on loopback only (dashboard is the same command); serves cytoscape from node_modules with a self-only CSP", async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const refused = await runCli(["dashboard", "--proxy-admin", api.admin, "--listen", "0.0.0.0:0"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/loopback only/);
    const res = await fetch(url);
    expect(res.headers.get("content-security-policy")).toBe("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:");
    const lib = await fetch(new URL("/assets/cytoscape.min.js", url));
    expect(lib.status).toBe(200);
    expect((await lib.text()).length).toBeGreaterThan(100_000);
  });

  it("draws api and the unmeshed client, the plaintext edge dashed red; a meshed workload started later appears without a reload, its edge secured and labelled with identities and rate; the tap pane streams", async () => {
    await page.goto(url);
    const plain = await eventually("the unmeshed edge", async () => {
      const g = await graph(page);
      return g.edges.find((e) => e.source === "(unmeshed)" && e.target === "default/api");
    }, 30_000, 200);
    expect(plain.state).toBe("plaintext");
    expect(plain.label).toMatch(/^plaintext: no_tls_from_remote\n[\d.]+ (rps|conns)$/);
    expect((await graph(page)).nodes).toEqual(["(unmeshed)", "default/api"]);
    expect(await page.evaluate("viz.cy.edges()[0].style('line-style')")).toBe("dashed");
    const reloadsBefore = (await page.evaluate("performance.getEntriesByType('navigation').length")) as number;

    // A new connection: web starts calling api, and its edge appears on the open page.
    await mesh.startWorkload({ name: "web", ip: "127.0.1.71", calls: "api", callIntervalMs: 200 });
    const secured = await eventually("web's edge", async () => {
      const g = await graph(page);
      return g.edges.find((e) => e.source === "default/web" && e.target === "default/api" && Number(/([\d.]+) rps$/.exec(e.label)?.[1] ?? 0) > 0);
    }, 30_000, 200);
    expect(secured.state).toBe("secured");
    expect(secured.label).toMatch(/^mTLS web\.default → api\.default\n[\d.]+ rps$/);
    expect(await page.evaluate(`viz.cy.getElementById(${JSON.stringify(`default/web->default/api true `)}).style('line-color')`)).toBe("rgb(19,121,91)");
    expect((await graph(page)).nodes).toEqual(["(unmeshed)", "default/api", "default/web"]);
    expect(await page.evaluate("performance.getEntriesByType('navigation').length")).toBe(reloadsBefore);
    // The table below has the same edges.
    const row = page.locator('tr.secured[data-source="default/web"][data-destination="default/api"]');
    await row.waitFor({ timeout: 10_000 });
    expect(await row.locator("td.state").textContent()).toBe("SECURED ✓");
    // Live tap: api's connections from web, with their identity and policy decision.
    await eventually("tap lines", async () => ((await page.locator("#tap li", { hasText: "id=web.default" }).count()) > 0 ? true : undefined), 15_000, 200);
    expect(await page.locator("#tap li", { hasText: "allow:" }).count()).toBeGreaterThan(0);
  }, 120_000);

  it("a policy that refuses the unmeshed client turns its edge to denied (from the tap stream); web's stays secured; a screenshot is kept", async () => {
    await mesh.setPolicy("api", "all-authenticated");
    const denied = await eventually("the denied edge", async () => {
      const g = await graph(page);
      return g.edges.find((e) => e.source === "(unmeshed)" && e.target === "default/api" && e.state === "denied");
    }, 30_000, 200);
    expect(denied.label).toMatch(/^denied: /);
    expect(await page.evaluate(`viz.cy.edges('.denied').style('line-style')`)).toBe("dotted");
    expect((await graph(page)).edges.find((e) => e.source === "default/web")?.state).toBe("secured");
    expect(await page.locator("#tap li.deny").count()).toBeGreaterThan(0);
    expect(await page.locator('tr.denied[data-source="(unmeshed)"] td.state').textContent()).toMatch(/^denied: /);

    await mkdir(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, "viz.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect((await stat(shot)).size).toBeGreaterThan(20_000);
    console.log(`viz screenshot: ${shot}`);

    const json = (await (await fetch(new URL("/api/edges", url))).json()) as EdgeReport;
    expect(json.edges.some((e) => e.source.workload === "default/web" && e.secured)).toBe(true);
    expect(consoleErrors).toEqual([]);
    const origin = new URL(url).origin;
    expect(requests.filter((r) => !r.startsWith(`${origin}/`) && !r.startsWith("data:"))).toEqual([]);
  }, 90_000);
});
