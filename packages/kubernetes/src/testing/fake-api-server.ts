/**
 * A fake Kubernetes API server for tests: plain HTTP on loopback, an object
 * store with one resource-version counter, lists, watches from a version with
 * retained history, bookmarks, 410 Gone (HTTP status or in-stream ERROR),
 * server-side close after `timeoutSeconds`, dropped connections on demand,
 * TokenReview and SelfSubjectAccessReview. It refuses what a real API server
 * refuses (unknown query parameters, wrong bearer token, malformed bodies)
 * and records every request so tests can check what clients sent.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A Kubernetes object as JSON: `apiVersion`, `kind`, `metadata` and anything else. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; [key: string]: unknown };
  [key: string]: unknown;
}

/** A resource the fake server serves: where it lives and what its objects are called. */
export interface FakeResource {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** The resources served unless others are given: what meshtls reads. */
export const FAKE_RESOURCES: readonly FakeResource[] = [
  { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true },
  { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true },
  { group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false },
  { group: "discovery.k8s.io", version: "v1", plural: "endpointslices", kind: "EndpointSlice", namespaced: true },
  { group: "policy.linkerd.io", version: "v1beta3", plural: "servers", kind: "Server", namespaced: true },
  { group: "policy.linkerd.io", version: "v1beta1", plural: "serverauthorizations", kind: "ServerAuthorization", namespaced: true },
  { group: "policy.linkerd.io", version: "v1alpha1", plural: "authorizationpolicies", kind: "AuthorizationPolicy", namespaced: true },
  { group: "policy.linkerd.io", version: "v1alpha1", plural: "meshtlsauthentications", kind: "MeshTLSAuthentication", namespaced: true },
  { group: "policy.linkerd.io", version: "v1alpha1", plural: "networkauthentications", kind: "NetworkAuthentication", namespaced: true },
];

/** What a token is, for the built-in TokenReview answer. */
export interface FakeToken {
  /** e.g. `system:serviceaccount:shop:web`. */
  username: string;
  /** The token's `aud` claim. */
  audiences: readonly string[];
  uid?: string;
  groups?: readonly string[];
  extra?: Record<string, readonly string[]>;
}

/** The audience of tokens the API server itself accepts (a token reviewed without `spec.audiences`). */
export const FAKE_API_AUDIENCE = "https://kubernetes.default.svc.cluster.local";

/** A TokenReview answer: a `status`, or an HTTP error with a Status body. */
export type TokenReviewAnswer = { status: Record<string, unknown> } | { httpStatus: number; message: string; reason?: string };

/** One request the server received, as sent. */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body?: unknown;
}

export interface FakeApiServerOptions {
  /** Bearer token every request must carry; absent: any (or none). */
  bearerToken?: string;
  /** Events kept for watches; a watch from an older version gets 410. Default 10000. */
  historyLimit?: number;
  /** How an expired version is answered on a watch: HTTP 410, or 200 then an in-stream ERROR event. Default "event". */
  goneAs?: "status" | "event";
  /** Interval of BOOKMARK events on watches that ask for them, in ms. Default 1000. */
  bookmarkIntervalMs?: number;
  resources?: readonly FakeResource[];
  /** Tokens the built-in TokenReview knows. */
  tokens?: Record<string, FakeToken>;
}

interface StoredEvent {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  resource: FakeResource;
  object: KubeObject;
}

interface OpenWatch {
  resource: FakeResource;
  namespace: string | undefined;
  selector: LabelRequirement[];
  response: ServerResponse;
  socket: Socket;
  bookmarks: boolean;
}

type LabelRequirement = { key: string; op: "=" | "!=" | "exists" | "!exists"; value?: string };

export interface FakeApiServer {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Creates or replaces an object (ADDED or MODIFIED); returns its new resourceVersion. */
  apply(object: KubeObject): string;
  /** Deletes an object (DELETED); returns the new resourceVersion, or undefined when there was none. */
  remove(kind: string, namespace: string | undefined, name: string): string | undefined;
  /** A copy of a stored object. */
  get(kind: string, namespace: string | undefined, name: string): KubeObject | undefined;
  /** Copies of every stored object of a kind. */
  list(kind: string): KubeObject[];
  /** The current resourceVersion. */
  resourceVersion(): string;
  /** Changes how an expired version is answered on a watch (see `FakeApiServerOptions.goneAs`). */
  setGoneAs(goneAs: "status" | "event"): void;
  /** Forgets all history: a watch from any version before now gets 410 Gone. */
  compact(): void;
  /** Destroys the connection of every open watch (no final chunk), as a broken network does. */
  dropWatches(): number;
  /** Ends every open watch cleanly, as the server does at `timeoutSeconds`. */
  endWatches(): number;
  /** Sends a BOOKMARK now on every watch that asked for them. */
  sendBookmarks(): void;
  /** Answers the next `count` requests whose path starts with `pathPrefix` (and method, when given) with an error Status. */
  failNext(rule: { pathPrefix: string; method?: string; httpStatus: number; count?: number; message?: string }): void;
  /** Replaces the TokenReview answer (default: from `tokens`, as the API server does). */
  onTokenReview(answer: ((spec: { token: string; audiences: string[] }) => TokenReviewAnswer) | undefined): void;
  /** Adds (or replaces) a token the built-in TokenReview knows. */
  addToken(token: string, info: FakeToken): void;
  /** Sets whether SelfSubjectAccessReviews are allowed (default true). */
  setAccess(allowed: (attributes: Record<string, unknown>) => boolean): void;
  /** Every request so far, oldest first. */
  requests(): RecordedRequest[];
  /** Number of open watches. */
  openWatches(): number;
  close(): Promise<void>;
}

const KNOWN_QUERY = new Set([
  "watch",
  "resourceVersion",
  "resourceVersionMatch",
  "allowWatchBookmarks",
  "timeoutSeconds",
  "labelSelector",
  "fieldSelector",
  "limit",
  "continue",
  "pretty",
  "sendInitialEvents",
]);

/** A `Status` body as the API server writes it. */
export function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  405: "MethodNotAllowed",
  409: "Conflict",
  410: "Expired",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
};

function parseLabelSelector(text: string): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  for (const part of text.split(",").map((p) => p.trim()).filter((p) => p !== "")) {
    let m: RegExpExecArray | null;
    if ((m = /^([^!=\s]+)\s*!=\s*(\S*)$/.exec(part))) out.push({ key: m[1]!, op: "!=", value: m[2]! });
    else if ((m = /^([^!=\s]+)\s*==?\s*(\S*)$/.exec(part))) out.push({ key: m[1]!, op: "=", value: m[2]! });
    else if ((m = /^!([^!=\s]+)$/.exec(part))) out.push({ key: m[1]!, op: "!exists" });
    else if (/^[^!=\s]+$/.test(part)) out.push({ key: part, op: "exists" });
    else throw new Error(`unable to parse requirement: ${part}`);
  }
  return out;
}

function selects(selector: LabelRequirement[], object: KubeObject): boolean {
  const labels = object.metadata.labels ?? {};
  return selector.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    if (r.op === "exists") return has;
    if (r.op === "!exists") return !has;
    if (r.op === "=") return has && labels[r.key] === r.value;
    return !has || labels[r.key] !== r.value;
  });
}

const keyOf = (resource: FakeResource, namespace: string | undefined, name: string): string => `${resource.group}/${resource.plural}/${namespace ?? ""}/${name}`;
const clone = <T>(value: T): T => structuredClone(value);

/** Starts a fake API server on 127.0.0.1 (a free port unless `port` is given). */
export async function startFakeApiServer(options: FakeApiServerOptions = {}, port = 0): Promise<FakeApiServer> {
  const resources = options.resources ?? FAKE_RESOURCES;
  const historyLimit = options.historyLimit ?? 10_000;
  let goneAs = options.goneAs ?? "event";
  const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 1000;
  const tokens = new Map(Object.entries(options.tokens ?? {}));
  const store = new Map<string, { resource: FakeResource; object: KubeObject }>();
  const history: StoredEvent[] = [];
  /** Events up to and including this version are no longer all in `history`. */
  let compactedThrough = 0;
  let rv = 100;
  const watches = new Set<OpenWatch>();
  const recorded: RecordedRequest[] = [];
  const failures: { pathPrefix: string; method?: string; httpStatus: number; count: number; message: string }[] = [];
  let tokenReview: ((spec: { token: string; audiences: string[] }) => TokenReviewAnswer) | undefined;
  let access: (attributes: Record<string, unknown>) => boolean = () => true;

  const resourceOfKind = (kind: string): FakeResource => {
    const resource = resources.find((r) => r.kind === kind);
    if (resource === undefined) throw new Error(`fake API server: no resource of kind ${kind}`);
    return resource;
  };

  function record(event: StoredEvent): void {
    history.push(event);
    while (history.length > historyLimit) compactedThrough = history.shift()!.rv;
    for (const watch of watches) {
      if (watch.resource !== event.resource) continue;
      if (watch.namespace !== undefined && event.object.metadata.namespace !== watch.namespace) continue;
      if (!selects(watch.selector, event.object)) continue;
      watch.response.write(JSON.stringify({ type: event.type, object: event.object }) + "\n");
    }
  }

  function defaultTokenReview(spec: { token: string; audiences: string[] }): TokenReviewAnswer {
    const token = tokens.get(spec.token);
    if (token === undefined) return { status: { user: {}, error: "[invalid bearer token, square/go-jose: error in cryptographic primitive]" } };
    const wanted = spec.audiences.length > 0 ? spec.audiences : [FAKE_API_AUDIENCE];
    const common = wanted.filter((a) => token.audiences.includes(a));
    if (common.length === 0) {
      return {
        status: {
          user: {},
          error: `[invalid bearer token, token audiences ${JSON.stringify(token.audiences)} is invalid for the target audiences ${JSON.stringify(wanted)}]`,
        },
      };
    }
    const ns = token.username.split(":")[2] ?? "";
    return {
      status: {
        authenticated: true,
        user: {
          username: token.username,
          uid: token.uid ?? "00000000-0000-4000-8000-000000000000",
          groups: token.groups ?? ["system:serviceaccounts", `system:serviceaccounts:${ns}`, "system:authenticated"],
          ...(token.extra === undefined ? {} : { extra: token.extra }),
        },
        audiences: common,
      },
    };
  }

  const server = createServer((request, response) => {
    void handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) sendStatus(response, 500, error instanceof Error ? error.message : String(error));
      else response.destroy();
    });
  });

  function sendJson(response: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    response.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
    response.end(text);
  }

  function sendStatus(response: ServerResponse, code: number, message: string, reason = REASONS[code] ?? "Unknown"): void {
    sendJson(response, code, statusBody(code, reason, message));
  }

  async function readBody(request: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of request as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > 3 * 1024 * 1024) throw new Error("request body too large");
      chunks.push(chunk);
    }
    const text = Buffer.concat(chunks).toString("utf8");
    return text === "" ? undefined : (JSON.parse(text) as unknown);
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "http://fake");
    const query = Object.fromEntries(url.searchParams.entries());
    const entry: RecordedRequest = { method: request.method ?? "GET", path: url.pathname, query, headers: { ...request.headers } };
    recorded.push(entry);
    if (options.bearerToken !== undefined && request.headers.authorization !== `Bearer ${options.bearerToken}`) {
      sendStatus(response, 401, "Unauthorized");
      return;
    }
    const failure = failures.find((f) => url.pathname.startsWith(f.pathPrefix) && (f.method === undefined || f.method === entry.method));
    if (failure) {
      if (--failure.count <= 0) failures.splice(failures.indexOf(failure), 1);
      sendStatus(response, failure.httpStatus, failure.message);
      return;
    }
    if (entry.method === "POST") {
      let body: unknown;
      try {
        body = await readBody(request);
      } catch (error) {
        sendStatus(response, 400, `the request body is not JSON: ${(error as Error).message}`);
        return;
      }
      entry.body = body;
      if (url.pathname === "/apis/authentication.k8s.io/v1/tokenreviews") return tokenReviewRequest(body, response);
      if (url.pathname === "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") return accessReviewRequest(body, response);
      sendStatus(response, 405, `POST is not supported on ${url.pathname}`);
      return;
    }
    if (entry.method !== "GET") {
      sendStatus(response, 405, `${entry.method} is not supported`);
      return;
    }
    for (const name of Object.keys(query)) {
      if (!KNOWN_QUERY.has(name)) {
        sendStatus(response, 400, `unknown query parameter ${JSON.stringify(name)}`);
        return;
      }
    }
    const target = route(url.pathname);
    if (target === undefined) {
      sendStatus(response, 404, `the server could not find the requested resource (${url.pathname})`, "NotFound");
      return;
    }
    let selector: LabelRequirement[];
    try {
      selector = parseLabelSelector(query.labelSelector ?? "");
    } catch (error) {
      sendStatus(response, 400, (error as Error).message);
      return;
    }
    if (query.fieldSelector !== undefined && query.fieldSelector !== "") {
      sendStatus(response, 400, "fieldSelector is not supported by the fake API server");
      return;
    }
    if (target.name !== undefined) {
      const found = store.get(keyOf(target.resource, target.namespace, target.name));
      if (found === undefined) sendStatus(response, 404, `${target.resource.plural} "${target.name}" not found`);
      else sendJson(response, 200, found.object);
      return;
    }
    if (query.watch === "true" || query.watch === "1") return watchRequest(target.resource, target.namespace, selector, query, request, response);
    const items = [...store.values()]
      .filter((s) => s.resource === target.resource && (target.namespace === undefined || s.object.metadata.namespace === target.namespace))
      .map((s) => s.object)
      .filter((o) => selects(selector, o));
    const apiVersion = target.resource.group === "" ? target.resource.version : `${target.resource.group}/${target.resource.version}`;
    sendJson(response, 200, { kind: `${target.resource.kind}List`, apiVersion, metadata: { resourceVersion: String(rv) }, items });
  }

  function route(path: string): { resource: FakeResource; namespace: string | undefined; name: string | undefined } | undefined {
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    if (m === null) return undefined;
    const group = m[2] ?? "";
    const version = m[1] ?? m[3];
    const resource = resources.find((r) => r.group === group && r.version === version && r.plural === m[5]);
    if (resource === undefined) return undefined;
    if (m[4] !== undefined && !resource.namespaced) return undefined;
    return { resource, namespace: m[4], name: m[6] };
  }

  function watchRequest(
    resource: FakeResource,
    namespace: string | undefined,
    selector: LabelRequirement[],
    query: Record<string, string>,
    request: IncomingMessage,
    response: ServerResponse,
  ): void {
    const from = query.resourceVersion;
    let replay: { type: string; object: KubeObject }[];
    if (from === undefined || from === "" || from === "0") {
      replay = [...store.values()]
        .filter((s) => s.resource === resource && (namespace === undefined || s.object.metadata.namespace === namespace) && selects(selector, s.object))
        .map((s) => ({ type: "ADDED", object: s.object }));
    } else {
      const version = Number(from);
      if (!Number.isSafeInteger(version) || version < 0) {
        sendStatus(response, 400, `invalid resourceVersion ${JSON.stringify(from)}`);
        return;
      }
      if (version < compactedThrough) {
        const message = `too old resource version: ${version} (${compactedThrough + 1})`;
        if (goneAs === "status") {
          sendStatus(response, 410, message, "Expired");
          return;
        }
        response.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
        response.end(JSON.stringify({ type: "ERROR", object: statusBody(410, "Expired", message) }) + "\n");
        return;
      }
      replay = history
        .filter((e) => e.rv > version && e.resource === resource && (namespace === undefined || e.object.metadata.namespace === namespace) && selects(selector, e.object))
        .map((e) => ({ type: e.type, object: e.object }));
    }
    let timeoutMs: number | undefined;
    if (query.timeoutSeconds !== undefined) {
      const seconds = Number(query.timeoutSeconds);
      if (!Number.isSafeInteger(seconds) || seconds < 0) {
        sendStatus(response, 400, `invalid timeoutSeconds ${JSON.stringify(query.timeoutSeconds)}`);
        return;
      }
      timeoutMs = seconds * 1000;
    }
    response.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    response.flushHeaders();
    for (const event of replay) response.write(JSON.stringify(event) + "\n");
    const watch: OpenWatch = { resource, namespace, selector, response, socket: request.socket, bookmarks: query.allowWatchBookmarks === "true" };
    watches.add(watch);
    const timers: NodeJS.Timeout[] = [];
    if (timeoutMs !== undefined && timeoutMs > 0) timers.push(setTimeout(() => response.end(), timeoutMs));
    if (watch.bookmarks) timers.push(setInterval(() => bookmark(watch), bookmarkIntervalMs));
    const done = (): void => {
      watches.delete(watch);
      for (const timer of timers) clearTimeout(timer);
    };
    response.on("close", done);
    response.on("finish", done);
  }

  function bookmark(watch: OpenWatch): void {
    const apiVersion = watch.resource.group === "" ? watch.resource.version : `${watch.resource.group}/${watch.resource.version}`;
    watch.response.write(JSON.stringify({ type: "BOOKMARK", object: { kind: watch.resource.kind, apiVersion, metadata: { resourceVersion: String(rv) } } }) + "\n");
  }

  function tokenReviewRequest(body: unknown, response: ServerResponse): void {
    const review = body as { apiVersion?: unknown; kind?: unknown; spec?: { token?: unknown; audiences?: unknown } } | undefined;
    if (review?.apiVersion !== "authentication.k8s.io/v1" || review.kind !== "TokenReview") {
      sendStatus(response, 400, "the body is not an authentication.k8s.io/v1 TokenReview");
      return;
    }
    const token = review.spec?.token;
    const audiences = review.spec?.audiences ?? [];
    if (typeof token !== "string" || token === "") {
      sendStatus(response, 422, 'TokenReview.authentication.k8s.io "" is invalid: spec.token: Required value', "Invalid");
      return;
    }
    if (!Array.isArray(audiences) || !audiences.every((a) => typeof a === "string")) {
      sendStatus(response, 400, "spec.audiences must be a list of strings");
      return;
    }
    const spec = { token, audiences: audiences as string[] };
    const answer = (tokenReview ?? defaultTokenReview)(spec);
    if ("httpStatus" in answer) {
      sendStatus(response, answer.httpStatus, answer.message, answer.reason);
      return;
    }
    sendJson(response, 201, { kind: "TokenReview", apiVersion: "authentication.k8s.io/v1", metadata: { creationTimestamp: null }, spec, status: answer.status });
  }

  function accessReviewRequest(body: unknown, response: ServerResponse): void {
    const review = body as { apiVersion?: unknown; kind?: unknown; spec?: { resourceAttributes?: unknown } } | undefined;
    if (review?.apiVersion !== "authorization.k8s.io/v1" || review.kind !== "SelfSubjectAccessReview") {
      sendStatus(response, 400, "the body is not an authorization.k8s.io/v1 SelfSubjectAccessReview");
      return;
    }
    const attributes = review.spec?.resourceAttributes;
    if (typeof attributes !== "object" || attributes === null) {
      sendStatus(response, 422, "spec.resourceAttributes: Required value", "Invalid");
      return;
    }
    const allowed = access(attributes as Record<string, unknown>);
    sendJson(response, 201, {
      kind: "SelfSubjectAccessReview",
      apiVersion: "authorization.k8s.io/v1",
      metadata: { creationTimestamp: null },
      spec: review.spec,
      status: allowed ? { allowed: true, reason: "fake API server: allowed" } : { allowed: false, reason: "fake API server: denied" },
    });
  }

  const sockets = new Set<Socket>();
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    apply(input) {
      const resource = resourceOfKind(input.kind);
      const namespace = resource.namespaced ? (input.metadata.namespace ?? "default") : undefined;
      const key = keyOf(resource, namespace, input.metadata.name);
      const existed = store.has(key);
      rv++;
      const object = clone(input);
      object.metadata = { ...object.metadata, resourceVersion: String(rv) };
      if (namespace !== undefined) object.metadata.namespace = namespace;
      store.set(key, { resource, object });
      record({ rv, type: existed ? "MODIFIED" : "ADDED", resource, object });
      return String(rv);
    },
    remove(kind, namespace, name) {
      const resource = resourceOfKind(kind);
      const key = keyOf(resource, resource.namespaced ? (namespace ?? "default") : undefined, name);
      const found = store.get(key);
      if (found === undefined) return undefined;
      store.delete(key);
      rv++;
      const object = clone(found.object);
      object.metadata.resourceVersion = String(rv);
      record({ rv, type: "DELETED", resource, object });
      return String(rv);
    },
    get(kind, namespace, name) {
      const resource = resourceOfKind(kind);
      const found = store.get(keyOf(resource, resource.namespaced ? (namespace ?? "default") : undefined, name));
      return found === undefined ? undefined : clone(found.object);
    },
    list(kind) {
      const resource = resourceOfKind(kind);
      return [...store.values()].filter((s) => s.resource === resource).map((s) => clone(s.object));
    },
    resourceVersion: () => String(rv),
    setGoneAs(value) {
      goneAs = value;
    },
    compact() {
      history.length = 0;
      compactedThrough = rv;
    },
    dropWatches() {
      const open = [...watches];
      for (const watch of open) {
        watch.socket.destroy();
        watches.delete(watch);
      }
      return open.length;
    },
    endWatches() {
      const open = [...watches];
      for (const watch of open) watch.response.end();
      return open.length;
    },
    sendBookmarks() {
      for (const watch of watches) if (watch.bookmarks) bookmark(watch);
    },
    failNext(rule) {
      failures.push({ ...rule, count: rule.count ?? 1, message: rule.message ?? `fake API server: injected ${rule.httpStatus}` });
    },
    addToken(token, info) {
      tokens.set(token, info);
    },
    onTokenReview(answer) {
      tokenReview = answer;
    },
    setAccess(allowed) {
      access = allowed;
    },
    requests: () => [...recorded],
    openWatches: () => watches.size,
    async close() {
      for (const watch of watches) watch.response.end();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
