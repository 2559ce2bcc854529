import type { Timestamp } from "./gen/google/protobuf/timestamp.js";

/** Converts a Date into a `google.protobuf.Timestamp` (millisecond precision). */
export function dateToTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** Converts a `google.protobuf.Timestamp` into a Date (truncated to milliseconds). */
export function timestampToDate(timestamp: Timestamp): Date {
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1_000_000));
}
