/** A configuration value a user must fix; the app prints the message and exits 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
  readonly code = "ERR_CONFIG" as const;
}
