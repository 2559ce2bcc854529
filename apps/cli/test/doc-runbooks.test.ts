// The runbooks are tests: every ```sh block of docs/getting-started.md and
// docs/operations.md runs here, in order and as written (doc-runbook.ts), on
// loopback with the built binaries, while web calls api through the mesh every
// 200 ms; the anchor rotation in operations.md must not fail one request nor
// restart a process. A deliberately broken copy of a document must fail.
import { readFile, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeTempDir, repoRoot } from "./helpers.ts";
import { parseRunbook, readerPath, RunbookSession } from "./doc-runbook.ts";
import { alive } from "./mesh-helpers.ts";

const gettingStarted = path.join(repoRoot, "docs", "getting-started.md");
const operations = path.join(repoRoot, "docs", "operations.md");
/**
 * What a reader's terminal has: no node_modules/.bin, so only the document's PATH setup finds meshtls;
 * `node` is the one running this test (the binaries' `#!/usr/bin/env node` must not find an older system Node).
 */
const readerEnv = { PATH: [path.dirname(process.execPath), readerPath(process.env.PATH)].join(path.delimiter), HOME: process.env.HOME ?? "/root", LANG: "C.UTF-8" };

/** web's outbound proxy, as getting-started.md configures it, and the service it calls. */
const WEB_OUTBOUND = { host: "127.0.0.1", port: 4140 };
const API_URL = "http://api.default.svc.cluster.local/";

/** The fixed addresses the runbooks listen on (getting-started.md; 8090: the destination service's default policy port): a clash with another process is named, not a mystery. */
const RUNBOOK_ADDRESSES = ["127.0.0.1:8080", "127.0.0.1:9990", "127.0.0.1:8086", "127.0.0.1:8090", "127.0.0.1:9996", "127.0.1.2:8080", "127.0.1.2:4143", "127.0.1.2:4140", "127.0.1.2:4191", "127.0.1.1:4143", "127.0.0.1:4140", "127.0.0.1:4191"];

async function addressesInUse(addresses: string[]): Promise<string[]> {
  const busy: string[] = [];
  for (const address of addresses) {
    const [host, port] = address.split(":") as [string, string];
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once("error", () => resolve(false));
      server.listen(Number(port), host, () => server.close(() => resolve(true)));
    });
    if (!free) busy.push(address);
  }
  return busy;
}

/** Calls api through web's proxy every `intervalMs` until stopped; counts what happened. */
function startTraffic(intervalMs: number): { stop: () => Promise<{ ok: number; failed: string[] }> } {
  const result = { ok: 0, failed: [] as string[] };
  let stopped = false;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const req = http.get({ ...WEB_OUTBOUND, path: API_URL, agent: false, timeout: 10_000 }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => {
          if (res.statusCode === 200 && body.includes("hello from api")) result.ok++;
          else result.failed.push(`${new Date().toISOString()} HTTP ${res.statusCode} ${String(res.headers["l5d-proxy-error"] ?? "")} ${body.slice(0, 200)}`);
          resolve();
        });
      });
      req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
      req.on("error", (error) => {
        result.failed.push(`${new Date().toISOString()} ${error.message}`);
        resolve();
      });
    });
  const loop = (async () => {
    while (!stopped) {
      await one();
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return result;
    },
  };
}

describe("docs/getting-started.md then docs/operations.md, every command block as written", () => {
  let session: RunbookSession | undefined;
  afterAll(async () => {
    // DOCTEST_VERBOSE=1 prints what every block printed, to read the runbooks' real output.
    if (process.env.DOCTEST_VERBOSE === "1") {
      for (const o of session?.outcomes ?? []) console.log(`--- ${o.where} (${o.skipped === undefined ? `exit ${String(o.exitCode)}, ${o.elapsedMs} ms` : `skipped: ${o.skipped}`})\n${o.output}`);
    }
    await session?.close();
  });

  it("runs both runbooks; the anchor rotation loses no request and restarts no process", async () => {
    const started = Date.now();
    expect(await addressesInUse(RUNBOOK_ADDRESSES), "addresses the runbooks listen on are held by another process").toEqual([]);
    const first = parseRunbook(gettingStarted, "docs/getting-started.md");
    const second = parseRunbook(operations, "docs/operations.md");
    session = await RunbookSession.create({ cwd: repoRoot, env: readerEnv });

    await session.run(first);
    const mesh = await session.folderFor("/tmp/mesh");
    const pidsBefore = (await readFile(path.join(mesh, "pids"), "utf8")).trim().split("\n").map(Number);
    expect(pidsBefore).toHaveLength(5); // identity, destination, api's app, api's proxy, web's proxy

    const traffic = startTraffic(200);
    const ran = await session.run(second).then(
      () => undefined,
      (error: unknown) => error,
    );
    const calls = await traffic.stop();
    console.log(`operations.md ran with ${calls.ok} requests through the mesh, ${calls.failed.length} failed`);
    if (ran !== undefined) throw ran;
    expect(calls.failed).toEqual([]);
    expect(calls.ok).toBeGreaterThan(50);
    // Nothing was restarted: the same five processes run, all alive.
    const pidsAfter = (await readFile(path.join(mesh, "pids"), "utf8")).trim().split("\n").map(Number);
    expect(pidsAfter).toEqual(pidsBefore);
    expect(pidsAfter.every(alive)).toBe(true);

    // The clean-up of getting-started.md, last; every process it started has exited.
    await session.run(first, first.blocks.filter((b) => b.last));
    const deadline = Date.now() + 15_000;
    while (pidsBefore.some(alive) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    expect(pidsBefore.filter(alive)).toEqual([]);

    const run = session.outcomes.filter((o) => o.skipped === undefined);
    const skipped = session.outcomes.filter((o) => o.skipped !== undefined);
    console.log(`doc runbooks: ${run.length} blocks run, ${skipped.length} skipped (${skipped.map((o) => `${o.where}: ${o.skipped}`).join("; ")}), ${Math.round((Date.now() - started) / 1000)} s`);
    // Only the blocks that build or run forever are skipped.
    expect(skipped.length).toBeLessThanOrEqual(2);
  }, 300_000);
});

describe("a broken copy of a runbook fails", () => {
  it("a misspelled flag in getting-started.md fails at its block, naming the line", async () => {
    const { dir, cleanup } = await makeTempDir();
    const session = await RunbookSession.create({ cwd: repoRoot, env: readerEnv });
    try {
      const text = await readFile(gettingStarted, "utf8");
      const good = "meshtls check --anchors trust-anchors.crt --issuer-dir issuer\n";
      expect(text).toContain(good);
      const broken = path.join(dir, "getting-started.md");
      await writeFile(broken, text.replace(good, "meshtls check --anchors trust-anchors.crt --isuer-dir issuer\n"));
      const runbook = parseRunbook(broken, "broken getting-started.md");
      const line = text.split("\n").findIndex((l) => l === good.trimEnd());
      const fence = text.split("\n").slice(0, line).findLastIndex((l) => l === "```sh") + 1;
      await expect(session.run(runbook)).rejects.toThrow(new RegExp(`broken getting-started\\.md:${fence}: exited 2[\\s\\S]*unknown option '--isuer-dir'`));
    } finally {
      await session.close();
      await cleanup();
    }
  }, 60_000);

  it("a block the document says fails, that succeeds, fails the run; an unknown directive is refused", async () => {
    const { dir, cleanup } = await makeTempDir();
    const session = await RunbookSession.create({ cwd: dir, env: readerEnv });
    try {
      const doc = path.join(dir, "doc.md");
      await writeFile(doc, "<!-- doctest: fails -->\n```sh\ntrue\n```\n");
      await expect(session.run(parseRunbook(doc))).rejects.toThrow(/doc\.md:2: exited 0 but the document says it fails/);
      await writeFile(doc, '<!-- doctest: expect "nope" -->\n```sh\necho yes\n```\n');
      await expect(session.run(parseRunbook(doc))).rejects.toThrow(/its output lacks "nope"/);
      await writeFile(doc, "<!-- doctest: sometimes -->\n```sh\ntrue\n```\n");
      expect(() => parseRunbook(doc)).toThrow(/unknown doctest directive "sometimes"/);
      // A background process a block leaves running is stopped by close().
      await writeFile(doc, "```sh\nsleep 300 &\necho $! > sleeper\n```\n");
      await session.run(parseRunbook(doc));
      const pid = Number((await readFile(path.join(dir, "sleeper"), "utf8")).trim());
      expect(alive(pid)).toBe(true);
      await session.close();
      expect(alive(pid)).toBe(false);
    } finally {
      await session.close();
      await cleanup();
    }
  }, 60_000);
});
