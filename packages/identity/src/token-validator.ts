/** Who a token says its bearer is: a Kubernetes ServiceAccount. */
export interface TokenIdentity {
  namespace: string;
  serviceAccount: string;
  /** The raw `sub` claim, e.g. `system:serviceaccount:default:web`. */
  subject: string;
  /** The token's `exp`, when it has one. */
  expiresAt?: Date;
}

/**
 * Authenticates a ServiceAccount token. Implementations reject with an
 * `IdentityError` whose code starts with `ERR_TOKEN_` (`ERR_TOKEN_UNAVAILABLE`
 * when the authority could not be asked; every other code means "not
 * authenticated"). Replaceable: the Kubernetes TokenReview validator plugs in
 * here.
 */
export interface TokenValidator {
  validate(token: Uint8Array, options?: { signal?: AbortSignal }): Promise<TokenIdentity>;
}
