/**
 * The identity service's `TokenValidator` over the Kubernetes TokenReview
 * API, as Linkerd's `controller/identity/validator.go` with two deliberate
 * differences: `status.audiences` must contain ours (the API server is then
 * known to be audience-aware), and a token for the API server's own audience
 * is refused unless `allowLegacyTokens` (Linkerd retries without audiences).
 */

import { IdentityError, IDENTITY_TOKEN_AUDIENCE, type TokenIdentity, type TokenValidator } from "@meshtls/identity";
import { isDnsLabel } from "@meshtls/pki";
import type { KubeApi } from "./api-client.ts";
import { KubernetesError } from "./errors.ts";

export interface TokenReviewValidatorOptions {
  api: KubeApi;
  /** The audience tokens must be bound to. Default `identity.l5d.io`. */
  audience?: string;
  /**
   * Also accept tokens for the API server's own audience (the legacy
   * automounted ServiceAccount token): on an audience error, review again
   * without audiences, as Linkerd does. Default false.
   */
  allowLegacyTokens?: boolean;
  /** Deadline of one TokenReview, in ms. Default 10000. */
  timeoutMs?: number;
  /** Largest token accepted, in bytes. Default 16384. */
  maxTokenBytes?: number;
}

interface TokenReviewStatus {
  authenticated?: boolean;
  user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  audiences?: string[];
  error?: string;
}

const SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:";

/**
 * Creates a TokenValidator that asks the API server (`POST
 * /apis/authentication.k8s.io/v1/tokenreviews`). Refusals, in order:
 * `ERR_TOKEN_MALFORMED` (not UTF-8, too large), `ERR_TOKEN_UNAVAILABLE` (the
 * API call failed or answered no status), `ERR_TOKEN_AUDIENCE` (status.error
 * about audiences, or status.audiences without ours), `ERR_TOKEN_REJECTED`
 * (any other status.error, or not authenticated), `ERR_TOKEN_CLAIMS` (the
 * user is not `system:serviceaccount:<ns>:<sa>` with DNS-1123 labels).
 */
export function createTokenReviewValidator(options: TokenReviewValidatorOptions): TokenValidator {
  const audience = options.audience ?? IDENTITY_TOKEN_AUDIENCE;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxTokenBytes = options.maxTokenBytes ?? 16_384;
  const decoder = new TextDecoder("utf-8", { fatal: true });

  async function review(token: string, audiences: string[], signal: AbortSignal | undefined): Promise<TokenReviewStatus> {
    let answer: { status?: TokenReviewStatus };
    try {
      answer = await options.api.request({
        method: "POST",
        path: "/apis/authentication.k8s.io/v1/tokenreviews",
        body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token, audiences } },
        timeoutMs,
        ...(signal === undefined ? {} : { signal }),
      });
    } catch (error) {
      const detail = error instanceof KubernetesError ? error.message : String(error);
      throw new IdentityError("ERR_TOKEN_UNAVAILABLE", `the Kubernetes API could not review the token: ${detail}`, { cause: error });
    }
    if (typeof answer !== "object" || answer === null || typeof answer.status !== "object" || answer.status === null) {
      throw new IdentityError("ERR_TOKEN_UNAVAILABLE", "the Kubernetes API answered the TokenReview without a status");
    }
    return answer.status;
  }

  return {
    async validate(bytes, validateOptions = {}): Promise<TokenIdentity> {
      if (bytes.length > maxTokenBytes) throw new IdentityError("ERR_TOKEN_MALFORMED", `token is over ${maxTokenBytes} bytes`);
      let token: string;
      try {
        token = decoder.decode(bytes).trim();
      } catch (error) {
        throw new IdentityError("ERR_TOKEN_MALFORMED", "token is not UTF-8 text", { cause: error });
      }
      if (token === "") throw new IdentityError("ERR_TOKEN_MALFORMED", "token is empty");
      let status = await review(token, [audience], validateOptions.signal);
      let legacy = false;
      if (status.error && status.error.includes("token audiences")) {
        if (!options.allowLegacyTokens) {
          throw new IdentityError("ERR_TOKEN_AUDIENCE", `the token is not for audience ${audience}: ${status.error}`);
        }
        status = await review(token, [], validateOptions.signal);
        legacy = true;
      }
      if (status.error) throw new IdentityError("ERR_TOKEN_REJECTED", `the Kubernetes API refused the token: ${status.error}`);
      if (status.authenticated !== true) throw new IdentityError("ERR_TOKEN_REJECTED", "the Kubernetes API did not authenticate the token");
      if (!legacy && !(status.audiences ?? []).includes(audience)) {
        throw new IdentityError(
          "ERR_TOKEN_AUDIENCE",
          `the TokenReview's status.audiences ${JSON.stringify(status.audiences ?? [])} does not contain ${audience}: the API server is not audience-aware, or the token is not for ${audience}`,
        );
      }
      const username = status.user?.username ?? "";
      const parts = username.split(":");
      if (!username.startsWith(SERVICE_ACCOUNT_PREFIX) || parts.length !== 4 || !isDnsLabel(parts[2]!) || !isDnsLabel(parts[3]!)) {
        throw new IdentityError("ERR_TOKEN_CLAIMS", `the token's user ${JSON.stringify(username.slice(0, 300))} is not system:serviceaccount:<namespace>:<serviceaccount>`);
      }
      return { namespace: parts[2]!, serviceAccount: parts[3]!, subject: username };
    },
  };
}

/**
 * Asks the API server (SelfSubjectAccessReview) whether this process may
 * create TokenReviews; the identity service refuses to start without it.
 * @throws KubernetesError `ERR_KUBE_ACCESS_DENIED`, or the API client's codes
 */
export async function checkAccess(api: KubeApi, attributes: { group: string; resource: string; verb: string; version?: string; namespace?: string }): Promise<void> {
  const answer = await api.request<{ status?: { allowed?: boolean; reason?: string; evaluationError?: string } }>({
    method: "POST",
    path: "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    body: { apiVersion: "authorization.k8s.io/v1", kind: "SelfSubjectAccessReview", spec: { resourceAttributes: attributes } },
  });
  if (answer.status?.allowed !== true) {
    const why = [answer.status?.reason, answer.status?.evaluationError].filter((s) => s !== undefined && s !== "").join("; ");
    const what = `${attributes.verb} ${attributes.group === "" ? "" : `${attributes.group}/`}${attributes.resource}`;
    throw new KubernetesError("ERR_KUBE_ACCESS_DENIED", `this service account may not ${what}${why === "" ? "" : ` (${why})`}: grant it with RBAC`);
  }
}
