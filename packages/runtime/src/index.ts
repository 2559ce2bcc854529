export { ConfigError } from "./errors.ts";
export { parseAddress, parseBooleanEnv, parseCommandLine, parseDurationMs, isLoopback } from "./config-values.ts";
export { createAdminServer } from "./admin.ts";
