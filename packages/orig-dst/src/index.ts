export { createOriginalDestinationReader, originalDestination } from "./original-destination.ts";
export type { OriginalDestination, OriginalDestinationReader } from "./original-destination.ts";
export { OrigDstError } from "./errors.ts";
export type { OrigDstErrorCode } from "./errors.ts";
