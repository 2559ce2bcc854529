import { defineConfig } from "tsup";
import { libraryOptions } from "../../tsup.shared.ts";

export default defineConfig(libraryOptions);
