/* global process */
// What the bench scripts share about the processes they start (run.mjs, idle-rss.mjs).
import net from "node:net";

/** A port free on `host` now (listen on 0, read it, close). */
export async function freePort(host) {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, host, r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * A pod's environment for every process a bench starts, bare node included so that comparisons stay fair:
 * MALLOC_ARENA_MAX=2 as the proxy image sets it (apps/Dockerfile; `mallocArenaMax` overrides, "" unsets), and no
 * NODE_EXTRA_CA_CERTS, which a pod has not but a developer's shell may: node:tls then parses those certificates on its
 * loader thread at import, whose malloc arena (0.8 MiB for Debian's bundle) stays in every process that loads node:tls.
 */
export function podEnv(mallocArenaMax = "2") {
  const env = { ...process.env, MALLOC_ARENA_MAX: mallocArenaMax };
  delete env.NODE_EXTRA_CA_CERTS;
  if (env.MALLOC_ARENA_MAX === "") delete env.MALLOC_ARENA_MAX;
  return env;
}
