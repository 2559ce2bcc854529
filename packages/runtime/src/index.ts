export { ConfigError } from "./errors.ts";
export { parseAddress, parseBooleanEnv, parseCommandLine, parseConfigOrExit, parseCount, parseDurationMs, isLoopback } from "./config-values.ts";
export { ADMIN_SERVER_LIMITS, createAdminServer, requestPath } from "./admin.ts";
export type { AdminReadiness, AdminRoute, AdminServerLimits, AdminServerOptions } from "./admin.ts";
export { GRPC_CONNECTION_TIMEOUTS, limitGrpcConnections } from "./grpc-connection-limits.ts";
export type { GrpcConnectionCloseReason, GrpcConnectionLimitsOptions, GrpcConnectionTimeouts } from "./grpc-connection-limits.ts";
export { noopLogger } from "./logger.ts";
export type { Logger } from "./logger.ts";
// Followed files and folders: one core, one set of defaults (FOLLOW_DEFAULTS) for every file meshtls follows.
export { FOLLOW_DEFAULTS, createFolderReloader } from "./folder-reloader.ts";
export type { FolderReloader, FolderReloaderOptions } from "./folder-reloader.ts";
export { FileRefused, createFollowedFile } from "./followed-file.ts";
export type { FileRefusal, FollowedFile, FollowedFileOptions, FollowedFileResult } from "./followed-file.ts";
