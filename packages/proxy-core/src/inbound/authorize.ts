import type { AuthorizeDecision } from "../policy.js";
import { authorize } from "../policy.js";
import type { InboundTarget } from "./target.js";

/** Decides a connection against its port's current policy (the target's, or a newer one for a connection already open). */
export function authorizeTarget(target: InboundTarget, policy = target.policy): AuthorizeDecision {
  return authorize(policy, {
    clientAddress: target.client.address,
    meshTls: target.tls.tls === "true",
    ...(target.clientId === undefined ? {} : { clientId: target.clientId }),
  });
}

/** The client as a connection's policy event names it: `host:port` (as its tap connection events show it) and verified identity. */
export function authzPeer(target: InboundTarget): { address: string; id?: string } {
  const { address, port } = target.client;
  return { address: address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`, ...(target.clientId === undefined ? {} : { id: target.clientId }) };
}
