import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";
import { runReadmeExample } from "../../../test-support/readme-example.ts";

it("runs the README's opening example and prints what its comments say", async () => {
  const { printed, expected } = await runReadmeExample(path.resolve(path.dirname(fileURLToPath(import.meta.url)), ".."));
  expect(printed).toEqual(expected);
  expect(expected.length).toBeGreaterThan(0);
});
