import { identityName, parseIdentityName, spiffeId } from "@meshtls/pki";
import { IdentityError } from "./errors.ts";
import type { TokenIdentity } from "./token-validator.ts";

/** A requested identity that is well-formed and inside this trust domain. */
export interface RequestedIdentity {
  name: string;
  namespace: string;
  serviceAccount: string;
  /** `spiffe://<td>/ns/<ns>/sa/<sa>`, put in the leaf's URI SAN. */
  spiffeId: string;
}

/**
 * Maps names to ServiceAccounts and back. Replaceable: a platform with other
 * naming rules supplies its own.
 */
export interface IdentityPolicy {
  /** Checks a requested identity name; throws `ERR_IDENTITY_INVALID`. */
  parseRequested(name: string): RequestedIdentity;
  /** The one identity name a token's ServiceAccount may request. */
  expectedName(token: TokenIdentity): string;
}

/**
 * The Linkerd naming policy:
 * `<sa>.<ns>.serviceaccount.identity.<controlNamespace>.<trustDomain>`.
 */
export function createIdentityPolicy(options: { trustDomain?: string; controlNamespace?: string } = {}): IdentityPolicy {
  const trustDomain = options.trustDomain ?? "cluster.local";
  const controlNamespace = options.controlNamespace ?? "meshtls";
  return {
    parseRequested(name) {
      let parts;
      try {
        parts = parseIdentityName(name, { trustDomain, controlNamespace });
      } catch (error) {
        // pki's message names the identity and the expected form.
        const why = error instanceof Error ? error.message : String(error);
        throw new IdentityError("ERR_IDENTITY_INVALID", `requested ${why}`, { cause: error });
      }
      return {
        name,
        namespace: parts.namespace,
        serviceAccount: parts.serviceAccount,
        spiffeId: spiffeId({ trustDomain, namespace: parts.namespace, serviceAccount: parts.serviceAccount }),
      };
    },
    expectedName(token) {
      return identityName({ serviceAccount: token.serviceAccount, namespace: token.namespace, controlNamespace, trustDomain });
    },
  };
}
