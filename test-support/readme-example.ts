import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { inspect } from "node:util";

/**
 * Runs the first ```ts block of a package's README.md, exactly as written, and
 * returns what its `console.log(x); // expected` lines printed beside what their
 * comments say they print. The example is written under the package's own
 * node_modules so that its imports resolve as a user's would.
 */
export async function runReadmeExample(packageDir: string): Promise<{ printed: string[]; expected: string[] }> {
  const readme = readFileSync(path.join(packageDir, "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  if (code === undefined) throw new Error(`${packageDir}/README.md has no \`\`\`ts example`);
  const expected: string[] = [];
  const source = code.replace(/console\.log\((.*)\); \/\/ (.*)$/gm, (_m, expr: string, want: string) => {
    expected.push(want);
    return `globalThis.__readmeLog(${expr});`;
  });
  const printed: string[] = [];
  (globalThis as { __readmeLog?: (v: unknown) => void }).__readmeLog = (v) =>
    printed.push(typeof v === "string" ? v : inspect(v, { breakLength: Infinity }));
  mkdirSync(path.join(packageDir, "node_modules"), { recursive: true });
  const dir = mkdtempSync(path.join(packageDir, "node_modules", ".readme-"));
  try {
    const file = path.join(dir, "example.ts");
    writeFileSync(file, source);
    await import(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { printed, expected };
}
