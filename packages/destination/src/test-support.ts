import { credentials, Server, ServerCredentials } from "@grpc/grpc-js";
import type { ClientReadableStream, ServiceError } from "@grpc/grpc-js";
import { DestinationClient as GrpcDestinationClient, tcpAddressToString } from "@meshtls/api";
import { afterEach } from "vitest";
import type { DestinationProfile, Update } from "@meshtls/api";
import type { EndpointRegistry, RegistryChange, RegistryService, RegistrySnapshot, RegistryWorkload } from "./registry.js";
import { createDestinationServer, type DestinationServerOptions, type DestinationServerHandle } from "./server.js";

/** The fixture service of the Get and GetProfile tests: `api.default`, port 80 → 8080, one meshed endpoint (pod api-0). */
export const API_SERVICE: RegistryService = {
  name: "api",
  namespace: "default",
  clusterIP: "10.96.0.10",
  ports: [{ port: 80, targetPort: 8080 }],
  endpoints: [{ address: "127.0.1.1", meshed: true, serviceAccount: "api", inboundPort: 4143, pod: "api-0", weight: 10000 }],
};

/** Starts a real grpc-js server with the destination service on 127.0.0.1 (port 0 unless given). */
export async function startServer(
  options: DestinationServerOptions,
  port = 0,
): Promise<{ handle: DestinationServerHandle; address: string; port: number; stop(): Promise<void>; kill(): void }> {
  const server = new Server();
  const handle = createDestinationServer(options);
  server.addService(handle.definition, handle.implementation);
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  return {
    handle,
    address: `127.0.0.1:${bound}`,
    port: bound,
    stop: async () => {
      handle.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
    /** As a SIGKILL: every connection dropped at once, no stream ended with a status. */
    kill: () => {
      server.forceShutdown();
      handle.close();
    },
  };
}

/** Polls `check` every 10 ms until it returns true, failing after `timeoutMs`. */
export async function eventually(check: () => boolean, timeoutMs = 5000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A raw stream on a plaintext channel: what it received so far, its error, and a close. */
function openRaw<T>(address: string, open: (client: GrpcDestinationClient) => ClientReadableStream<T>): { received: T[]; error(): ServiceError | undefined; close(): void } {
  const client = new GrpcDestinationClient(address, credentials.createInsecure());
  const received: T[] = [];
  let error: ServiceError | undefined;
  const call = open(client);
  call.on("data", (message: T) => received.push(message));
  call.on("error", (e: ServiceError) => (error = e));
  return {
    received,
    error: () => error,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

/** Opens a raw Get stream and collects its updates. */
export function openGet(address: string, path: string, contextToken = ""): { updates: Update[]; error(): ServiceError | undefined; close(): void } {
  const stream = openRaw(address, (client) => client.get({ scheme: "k8s", path, contextToken }));
  return { updates: stream.received, error: stream.error, close: stream.close };
}

/** Opens a raw GetProfile stream and collects its profiles. */
export function openGetProfile(address: string, path: string, contextToken = ""): { profiles: DestinationProfile[]; error(): ServiceError | undefined; close(): void } {
  const stream = openRaw(address, (client) => client.getProfile({ scheme: "", path, contextToken }));
  return { profiles: stream.received, error: stream.error, close: stream.close };
}

/** What a test opened, closed after it in reverse order (a stream before its server); call in a `describe`. */
export function cleanupsAfterEach(): { push(...cleanup: (() => unknown)[]): void } {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return { push: (...cleanup) => void cleanups.push(...cleanup) };
}

/** A registry edit: replace (or, with `undefined`, delete) the service `"name.namespace"`, or the workload at an IP. */
export interface RegistryEdit {
  service?: [string, RegistryService | undefined];
  workload?: [string, RegistryWorkload | undefined];
}

/**
 * A registry as the Kubernetes source is one: each change says which services and addresses it concerns and keeps
 * the other services' objects. With `workloads` it also finds workloads by IP (counting the lookups); without, it
 * has no `findWorkload` and IPs are found among the services' endpoints.
 */
export function createChangingRegistry(initial: RegistryService[], workloads?: Record<string, RegistryWorkload>) {
  let snapshot: RegistrySnapshot = { services: initial };
  let byIp = { ...workloads };
  let lookups = 0;
  const listeners = new Set<(snapshot: RegistrySnapshot, change?: RegistryChange) => void>();
  const registry: EndpointRegistry = {
    list: () => snapshot,
    watch(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    ...(workloads === undefined
      ? {}
      : {
          findWorkload(ip: string) {
            lookups++;
            return byIp[ip];
          },
        }),
  };
  return {
    registry,
    /** Applies `edit` and tells the watchers what it concerned. */
    change(edit: RegistryEdit) {
      const services = new Set<string>();
      const addresses = new Set<string>();
      if (edit.service !== undefined) {
        const [key, next] = edit.service;
        snapshot = { services: [...snapshot.services.filter((s) => `${s.name}.${s.namespace}` !== key), ...(next === undefined ? [] : [next])] };
        services.add(key);
      }
      if (edit.workload !== undefined) {
        const [ip, next] = edit.workload;
        byIp = { ...byIp };
        if (next === undefined) delete byIp[ip];
        else byIp[ip] = next;
        addresses.add(ip);
      }
      for (const listener of listeners) listener(snapshot, { services, addresses });
    },
    /** A registry that never changes, holding the same as this one now (for a fresh server to compare with). */
    frozen(): EndpointRegistry {
      const s = snapshot;
      const w = byIp;
      return { list: () => s, watch: () => () => undefined, ...(workloads === undefined ? {} : { findWorkload: (ip: string) => w[ip] }) };
    },
    /** How many times `findWorkload` was called. */
    lookups: () => lookups,
  };
}

/** The endpoints a Get stream's adds and removes leave, as sorted "ip:port". */
export function currentEndpoints(updates: Update[]): string[] {
  const set = new Set<string>();
  for (const u of updates) {
    if (u.update?.$case === "add") for (const a of u.update.value.addrs) set.add(tcpAddressToString(a.addr!));
    if (u.update?.$case === "remove") for (const a of u.update.value.addrs) set.delete(tcpAddressToString(a));
  }
  return [...set].sort();
}
