export { ConfigError } from "./errors.ts";
export { parseAddress, parseBooleanEnv, parseCommandLine, parseConfigOrExit, parseCount, parseDurationMs, isLoopback } from "./config-values.ts";
export { ADMIN_SERVER_LIMITS, createAdminServer, requestPath } from "./admin.ts";
export type { AdminServerLimits, AdminServerOptions } from "./admin.ts";
