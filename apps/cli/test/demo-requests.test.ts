import { describe, expect, it } from "vitest";
import { histogramQuantile, requestsOf } from "../src/demo/state.ts";

describe("the demo's per-request figures", () => {
  it("interpolates quantiles within buckets as histogram_quantile does", () => {
    const buckets: [number, number][] = [[1, 0], [5, 50], [10, 90], [50, 100], [Number.POSITIVE_INFINITY, 100]];
    expect(histogramQuantile(0.5, buckets)).toBe(5);
    expect(histogramQuantile(0.99, buckets)).toBeCloseTo(46, 5);
    expect(histogramQuantile(0.5, [[1, 0], [Number.POSITIVE_INFINITY, 0]])).toBeNaN();
  });

  it("reads success rate and latency per direction from response_total and response_latency_ms", () => {
    const s = (name: string, labels: Record<string, string>, value: number) => ({ name, labels, value });
    const samples = [
      s("response_total", { direction: "outbound", status_code: "200", classification: "success" }, 98),
      s("response_total", { direction: "outbound", status_code: "503", classification: "failure" }, 2),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "200", le: "10" }, 90),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "200", le: "20" }, 98),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "200", le: "+Inf" }, 98),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "503", le: "10" }, 2),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "503", le: "20" }, 2),
      s("response_latency_ms_bucket", { direction: "outbound", status_code: "503", le: "+Inf" }, 2),
    ];
    const [view] = requestsOf("web", samples);
    expect(view).toMatchObject({ workload: "web", direction: "outbound", responses: 100, successRate: 0.98 });
    expect(view?.p50Ms).toBeCloseTo(5.43, 2);
    expect(view?.p99Ms).toBeCloseTo(18.75, 2);
    expect(requestsOf("web", [])).toEqual([]);
  });
});
