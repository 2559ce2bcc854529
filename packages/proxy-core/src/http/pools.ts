import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";

/** Options of {@link createConnectionPools}. */
export interface CreateConnectionPoolsOptions {
  /** Opens a new connection to the destination `key` names; `agent` is the HTTP/1 pool it joins, when it joins one. */
  openSocket(key: string, agent?: http.Agent): Promise<net.Socket>;
  /** Opens the multiplexed HTTP/2 session to `key`; default: HTTP/2 with prior knowledge over `openSocket`. */
  openSession?(key: string): Promise<http2.ClientHttp2Session>;
  /** Idle HTTP/1 connections kept per destination. Default 10000 (Linkerd's). */
  maxIdlePerDestination?: number;
  /** An idle HTTP/1 connection is closed after this long. Default 3000 (Linkerd's). */
  idleTimeoutMs?: number;
  /** An HTTP/2 session without streams is closed after this long. Default 600000. */
  sessionIdleTimeoutMs?: number;
}

/** Keep-alive HTTP/1 pools and one HTTP/2 session per destination. */
export interface ConnectionPools {
  /** The keep-alive HTTP/1 pool toward `key`. */
  http1(key: string): http.Agent;
  /** The one HTTP/2 session toward `key`, opened on first use and again once it closed. */
  http2(key: string): Promise<http2.ClientHttp2Session>;
  /** HTTP/2 sessions open now. */
  sessions(): number;
  /**
   * Stops handing out every connection open now: later requests open new ones, while
   * requests in flight finish on the old (HTTP/2 sessions get GOAWAY; HTTP/1 connections close once free).
   */
  retire(): void;
  close(): void;
}

/**
 * Takes one HTTP/1 connection out of its pool: no request is given to it after,
 * and it closes once free (at once if it is idle now). node's Agent hands a freed
 * socket to a waiting request a tick before the request claims it, so only a socket
 * in the agent's free list counts as idle; and its `agentRemove` leaves a writable
 * socket in that list, so an idle one is taken out of it here first.
 */
export function retireHttp1Socket(agent: http.Agent, socket: net.Socket): void {
  if (socket.destroyed) return;
  let idle = false;
  for (const [name, free] of Object.entries(agent.freeSockets)) {
    const at = free?.indexOf(socket) ?? -1;
    if (free === undefined || at === -1) continue;
    free.splice(at, 1);
    if (free.length === 0) Reflect.deleteProperty(agent.freeSockets, name);
    idle = true;
  }
  // The agent's own listener: it forgets the socket and stops listening to it.
  socket.emit("agentRemove");
  if (idle) socket.destroy();
  else socket.once("free", () => socket.destroy());
}

/**
 * HTTP/2 with prior knowledge over a socket that may have bytes buffered in JS
 * (the detected preface, unshifted). node's http2 reads the handle directly, and
 * feeds what is buffered to the session first (nodejs/node#35475), so the socket
 * itself serves: a JS stream wrapper would copy every frame through JS.
 */
export function h2Transport(socket: net.Socket): net.Socket {
  return socket;
}

/** Creates the pools. */
export function createConnectionPools(options: CreateConnectionPoolsOptions): ConnectionPools {
  const agents = new Map<string, http.Agent>();
  const sessions = new Map<string, Promise<http2.ClientHttp2Session>>();
  // The sessions `sessions` resolved to: one closed here (retired before its certificates expire) is handed out no more.
  const ready = new Map<string, http2.ClientHttp2Session>();
  const idleTimeoutMs = options.idleTimeoutMs ?? 3000;
  const sessionIdleTimeoutMs = options.sessionIdleTimeoutMs ?? 600_000;
  const openSession =
    options.openSession ??
    (async (key: string): Promise<http2.ClientHttp2Session> => {
      const socket = await options.openSocket(key);
      return http2.connect(`http://${key}`, { createConnection: () => h2Transport(socket) as net.Socket });
    });
  return {
    http1(key) {
      let agent = agents.get(key);
      if (agent === undefined) {
        agent = new http.Agent({ keepAlive: true, maxFreeSockets: options.maxIdlePerDestination ?? 10_000, timeout: idleTimeoutMs, scheduling: "lifo" });
        // node's Agent takes a connection from an asynchronous createConnection through its callback.
        (agent as unknown as { createConnection: (opts: unknown, callback: (error: Error | null, socket?: net.Socket) => void) => undefined }).createConnection = (_opts, callback) => {
          options.openSocket(key, agent).then(
            (socket) => callback(null, socket),
            (error: unknown) => callback(error as Error),
          );
          return undefined;
        };
        agents.set(key, agent);
      }
      return agent;
    },
    http2(key) {
      const existing = sessions.get(key);
      if (existing !== undefined) {
        if (ready.get(key)?.closed !== true) return existing;
        ready.delete(key);
      }
      const opening = openSession(key).then((session) => {
        const forget = (): void => {
          if (sessions.get(key) === opening) {
            sessions.delete(key);
            ready.delete(key);
          }
        };
        if (sessions.get(key) === opening) ready.set(key, session);
        session.once("close", forget);
        session.once("goaway", forget);
        session.on("error", forget);
        session.setTimeout(sessionIdleTimeoutMs, () => session.close());
        return session;
      });
      opening.catch(() => {
        if (sessions.get(key) === opening) sessions.delete(key);
      });
      sessions.set(key, opening);
      return opening;
    },
    sessions: () => sessions.size,
    retire() {
      for (const agent of agents.values()) {
        // A keep-alive socket freed beyond maxFreeSockets is closed rather than pooled.
        agent.maxFreeSockets = 0;
        for (const free of Object.values(agent.freeSockets)) for (const socket of free ?? []) socket.destroy();
      }
      agents.clear();
      for (const opening of sessions.values()) opening.then((s) => s.close(), () => undefined);
      sessions.clear();
      ready.clear();
    },
    close() {
      for (const agent of agents.values()) agent.destroy();
      agents.clear();
      for (const opening of sessions.values()) opening.then((s) => s.destroy(), () => undefined);
      sessions.clear();
      ready.clear();
    },
  };
}
