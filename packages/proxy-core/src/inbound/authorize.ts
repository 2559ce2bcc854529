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
