// The binary's entry (dist/main.js): what must precede the evaluation of every other module, then the proxy.
import { pauseOptimizingTiers } from "./startup-tiers.js";

pauseOptimizingTiers();
await import("./main.js");
