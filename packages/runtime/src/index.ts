export { ConfigError } from "./errors.ts";
export { parseAddress, parseBooleanEnv, parseCommandLine, parseConfigOrExit, parseCount, parseDurationMs, isLoopback } from "./config-values.ts";
export { ADMIN_SERVER_LIMITS, createAdminServer, requestPath } from "./admin.ts";
export type { AdminServerLimits, AdminServerOptions } from "./admin.ts";
export { GRPC_HANDSHAKE_TIMEOUT_MS, setGrpcHandshakeTimeout } from "./grpc-handshake-timeout.ts";
export type { GrpcHandshakeTimeoutOptions } from "./grpc-handshake-timeout.ts";
