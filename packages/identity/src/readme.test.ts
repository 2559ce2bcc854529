import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { afterAll, expect, it } from "vitest";

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
mkdirSync(path.join(packageDir, "node_modules"), { recursive: true });
const tmpDir = mkdtempSync(path.join(packageDir, "node_modules", ".readme-"));
afterAll(() => rmSync(tmpDir, { recursive: true, force: true }));

it("runs the README's opening example and prints what its comments say", async () => {
  const readme = readFileSync(path.join(packageDir, "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  // Every `console.log(x); // expected` line must print `expected`.
  const expected: string[] = [];
  const source = (code ?? "").replace(/console\.log\((.*)\); \/\/ (.*)$/gm, (_m, expr: string, want: string) => {
    expected.push(want);
    return `globalThis.__readmeLog(${expr});`;
  });
  const printed: string[] = [];
  (globalThis as { __readmeLog?: (v: unknown) => void }).__readmeLog = (v) =>
    printed.push(typeof v === "string" ? v : inspect(v, { breakLength: Infinity }));
  const file = path.join(tmpDir, "example.ts");
  writeFileSync(file, source);
  await import(file);
  expect(printed).toEqual(expected);
  expect(expected.length).toBe(3);
});
