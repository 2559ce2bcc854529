import { CommanderError } from "commander";
import { CliError, describeError } from "./errors.ts";
import { createProcessOutput } from "./output.ts";
import { createProgram } from "./program.ts";

const output = createProcessOutput();
// A closed pipe (`meshtls inspect … | head`) is not an error worth a stack trace.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

const program = createProgram(output);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // commander has printed its message; help and --version exit 0, the rest are usage errors.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else if (error instanceof CliError) {
    output.err(`meshtls: ${error.message}`);
    process.exitCode = error.exitCode;
  } else {
    output.err(`meshtls: unexpected error: ${describeError(error)}`);
    process.exitCode = 1;
  }
}
