import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CliError } from "../src/errors.ts";
import { findSamples, parsePrometheusText, sumSamples } from "../src/mesh/prometheus.ts";

// Lines as prom-client writes them for the proxy's metrics (label values with escapes included).
const TEXT = `# HELP tcp_open_total Connections opened
# TYPE tcp_open_total counter
tcp_open_total{direction="outbound",peer="dst",target_addr="127.0.1.2:4143",tls="true",server_id="api.default.serviceaccount.identity.meshtls.cluster.local"} 12
tcp_open_total{direction="inbound",peer="src",target_addr="127.0.1.2:8080",tls="no_identity",no_tls_reason="no_tls_from_remote"} 3
identity_cert_expiration_timestamp_seconds 1795000000
identity_cert_refreshes_total{result="ok"} 2
odd{v="a \\"quoted\\" \\\\ value\\nline"} 1.5e3 1700000000000
nan_metric NaN
nodejs_eventloop_lag_mean_seconds Nan
inf_metric +Inf
`;

describe("parsePrometheusText", () => {
  it("reads names, labels (with escapes), values and ignores comments and timestamps", () => {
    const samples = parsePrometheusText(TEXT);
    expect(samples).toHaveLength(8);
    expect(findSamples(samples, "tcp_open_total", { tls: "true" })[0]?.labels.server_id).toBe("api.default.serviceaccount.identity.meshtls.cluster.local");
    expect(sumSamples(samples, "tcp_open_total")).toBe(15);
    expect(findSamples(samples, "odd")[0]).toEqual({ name: "odd", labels: { v: 'a "quoted" \\ value\nline' }, value: 1500 });
    expect(Number.isNaN(findSamples(samples, "nan_metric")[0]?.value)).toBe(true);
    // prom-client's spelling, before the event loop lag is first measured.
    expect(Number.isNaN(findSamples(samples, "nodejs_eventloop_lag_mean_seconds")[0]?.value)).toBe(true);
    expect(findSamples(samples, "inf_metric")[0]?.value).toBe(Infinity);
    expect(sumSamples(samples, "absent")).toBe(0);
  });

  it.each([
    ["no value", "metric_a"],
    ["unclosed label value", 'metric_a{a="b} 1'],
    ["bad escape", 'metric_a{a="\\x"} 1'],
    ["not a number", "metric_a one"],
    ["repeated label", 'metric_a{a="1",a="2"} 1'],
    ["garbage after the value", "metric_a 1 2 3"],
    ["no name", '{a="b"} 1'],
  ])("refuses %s with a coded error naming the line", (_name, line) => {
    expect(() => parsePrometheusText(`ok_metric 1\n${line}\n`)).toThrow(/metrics line 2 is malformed/);
    try {
      parsePrometheusText(line);
    } catch (error) {
      expect(error).toBeInstanceOf(CliError);
      expect((error as CliError).code).toBe("ERR_INPUT");
    }
  });

  it("random and mutated input (fast-check) gives samples or a CliError, never another exception", () => {
    const lines = TEXT.split("\n");
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 400 }),
          fc.tuple(fc.integer({ min: 0, max: TEXT.length }), fc.string({ maxLength: 20 })).map(([at, s]) => TEXT.slice(0, at) + s + TEXT.slice(at)),
          fc.array(fc.constantFrom(...lines, "{", "}", '"', "\\", "=", ","), { maxLength: 30 }).map((parts) => parts.join("")),
        ),
        (text) => {
          try {
            const samples = parsePrometheusText(text);
            for (const s of samples) expect(typeof s.value).toBe("number");
          } catch (error) {
            expect(error).toBeInstanceOf(CliError);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("a __proto__ label is an ordinary label", () => {
    const [sample] = parsePrometheusText('m{__proto__="x",tls="true"} 1');
    expect(Object.keys(sample!.labels)).toEqual(["__proto__", "tls"]);
    expect(Object.getPrototypeOf(sample!.labels)).toBe(Object.prototype);
  });

  it("a huge scrape is bounded", () => {
    const many = "m 1\n".repeat(100_001);
    expect(() => parsePrometheusText(many)).toThrow(/more than 100000 samples/);
  });
});
