/* global setTimeout */
// Waiting helpers shared by the bench scripts (run.mjs, transparent-pair.mjs).

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check()` is truthy (a throw counts as "not yet"), polling every 200 ms; throws after `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}
