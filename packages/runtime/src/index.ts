export { ConfigError } from "./errors.ts";
export { parseAddress, parseBooleanEnv, parseCommandLine, parseConfigOrExit, parseDurationMs, isLoopback } from "./config-values.ts";
export { createAdminServer } from "./admin.ts";
