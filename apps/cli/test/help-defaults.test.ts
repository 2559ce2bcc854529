import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { createMemoryOutput } from "../src/output.ts";
import { createProgram } from "../src/program.ts";
import { runCli } from "./helpers.ts";

/** Every command, subcommands included, with its full name (`certs create`). */
function commands(command: Command, prefix = ""): [string, Command][] {
  return command.commands.flatMap((sub) => {
    const name = `${prefix}${sub.name()}`;
    return [[name, sub] as [string, Command], ...commands(sub, `${name} `)];
  });
}

describe("every default --help shows is one the flag accepts", () => {
  const program = createProgram(createMemoryOutput());
  const all = commands(program);

  it("covers every command", () => {
    expect(all.map(([name]) => name)).toEqual(
      expect.arrayContaining(["certs create", "certs issuer", "certs leaf", "check", "demo", "renew", "token keygen", "token mint"]),
    );
  });

  for (const [name, command] of all) {
    const help = command.createHelp();
    const shown = command.options.flatMap((option) => {
      const match = / \(default: (.*)\)$/.exec(help.optionDescription(option));
      return match === null ? [] : [{ option, text: match[1]! }];
    });
    if (shown.length === 0) continue;
    it(`${name}: ${shown.map(({ option }) => option.long).join(", ")}`, () => {
      for (const { option, text } of shown) {
        if (!option.required && !option.optional) {
          // A switch (--force): its default is a boolean, not a value to pass.
          expect(typeof option.defaultValue, `${name} ${option.long}`).toBe("boolean");
          continue;
        }
        // A shown string default is quoted (commander's JSON); a described default is shown as written.
        const argument = text.startsWith('"') ? (JSON.parse(text) as string) : text;
        const parsed = option.parseArg === undefined ? argument : option.parseArg(argument, undefined as unknown as string);
        expect(parsed, `${name} ${option.long} (default: ${text})`).toEqual(option.defaultValue);
      }
    });
  }

  it("the binary prints the durations as written (87600h, 24h, 7s), never raw milliseconds", async () => {
    const create = await runCli(["certs", "create", "--help"]);
    expect(create.stdout).toMatch(/--anchor-lifetime <duration> +trust anchor lifetime \(d, h, m, s\) \(default:\s+87600h\)/);
    expect((await runCli(["token", "mint", "--help"])).stdout).toMatch(/\(default: 24h\)/);
    const demo = await runCli(["demo", "--help"]);
    expect(demo.stdout).toMatch(/\(default: 7s\)/);
    expect(demo.stdout).not.toMatch(/default: \d{4,}\)/);
  });
});
