/** The logging this package needs; pino's `Logger` fits. */
export interface Logger {
  debug(fields: object, message: string): void;
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export const noopLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
