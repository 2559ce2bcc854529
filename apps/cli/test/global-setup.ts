import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { appRoot, cliBin } from "./helpers.ts";

/** Process tests run dist/main.js: refuse to run them against a missing or stale build. */
export default function checkBuild(): void {
  let built: number;
  try {
    built = statSync(cliBin).mtimeMs;
  } catch {
    throw new Error(`${cliBin} is missing: run "pnpm --filter meshtls build" (or the turbo test task) first`);
  }
  const stale = listFiles(path.join(appRoot, "src")).filter((file) => statSync(file).mtimeMs > built);
  if (stale.length > 0) {
    throw new Error(`dist/main.js is older than ${path.relative(appRoot, stale[0]!)}: run "pnpm --filter meshtls build" first`);
  }
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? listFiles(path.join(dir, entry.name)) : [path.join(dir, entry.name)],
  );
}
