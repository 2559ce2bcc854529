import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DestinationError } from "./errors.js";
import { parseRegistry } from "./registry-file-format.js";

const issueExample = `services:
  - name: api
    namespace: default
    ports: [{ port: 80, targetPort: 8080 }]
    endpoints:
      - { address: 127.0.1.1, serviceAccount: api }              # meshed, inbound proxy on 4143
      - { address: 127.0.1.2, serviceAccount: api, inboundPort: 4143 }
      - { address: 127.0.2.1, meshed: false }
`;

function errorOf(text: string): DestinationError {
  try {
    parseRegistry({ text, file: "reg.yaml" });
  } catch (error) {
    if (error instanceof DestinationError) return error;
    throw error;
  }
  throw new Error("parsed");
}

describe("registry file format", () => {
  it("reads the issue's example with defaults", () => {
    expect(parseRegistry({ text: issueExample, file: "reg.yaml" })).toEqual({
      services: [
        {
          name: "api",
          namespace: "default",
          ports: [{ port: 80, targetPort: 8080 }],
          endpoints: [
            { address: "127.0.1.1", meshed: true, serviceAccount: "api", inboundPort: 4143, weight: 10000 },
            { address: "127.0.1.2", meshed: true, serviceAccount: "api", inboundPort: 4143, weight: 10000 },
            { address: "127.0.2.1", meshed: false, serviceAccount: "default", inboundPort: 4143, weight: 10000 },
          ],
        },
      ],
    });
  });

  it("reads JSON, canonicalises IPv6 and bare port numbers", () => {
    const json = JSON.stringify({ services: [{ name: "db", namespace: "data", clusterIP: "FD00:0::10", ports: [5432], endpoints: [{ address: "fd00:0:0::1", pod: "db-0" }] }] });
    expect(parseRegistry({ text: json, file: "reg.json" }).services[0]).toEqual({
      name: "db",
      namespace: "data",
      clusterIP: "fd00::10",
      ports: [{ port: 5432, targetPort: 5432 }],
      endpoints: [{ address: "fd00::1", meshed: true, serviceAccount: "default", inboundPort: 4143, pod: "db-0", weight: 10000 }],
    });
  });

  it("reads an endpoint's protocol hints (h2 but on opaque and skipped ports) and refuses a bad port in them", () => {
    const text = `services:\n  - name: web\n    endpoints:\n      - { address: 127.0.1.2, protocolHints: { opaquePorts: [5432] } }\n      - { address: 127.0.1.3, protocolHints: {} }\n`;
    const [first, second] = parseRegistry({ text, file: "reg.yaml" }).services[0]?.endpoints ?? [];
    expect(first?.protocolHints).toEqual({ opaquePorts: [5432], skippedPorts: [] });
    expect(second?.protocolHints).toEqual({ opaquePorts: [], skippedPorts: [] });
    expect(errorOf(text.replace("[5432]", "[0]")).message).toMatch(/protocolHints\.opaquePorts\[0\] must be a port in 1\.\.65535/);
    expect(errorOf(text.replace("opaquePorts", "opaque")).message).toMatch(/unknown field "opaque"/);
  });

  it("reports file, line and reason", () => {
    const cases: [string, number, RegExp][] = [
      [issueExample.replace("127.0.1.2", "127.0.1.300"), 7, /endpoints\[1\]\.address "127\.0\.1\.300" is not an IP address/],
      [issueExample.replace("inboundPort: 4143", "inboundPort: 70000"), 7, /inboundPort must be an integer in 1\.\.65535/],
      [issueExample.replace("meshed: false", "mesh: false"), 8, /unknown field "mesh"/],
      [issueExample.replace("name: api", "name: API"), 2, /not a DNS-1123 label/],
      [issueExample.replace("ports: [{", "ports: [{{"), 4, /./],
      [issueExample + "  - name: api\n", 9, /service api\.default is already defined/],
      [issueExample.replace("127.0.1.2", "127.0.1.1"), 7, /address 127\.0\.1\.1 is listed twice/],
      ["services:\n  - &a { name: x }\n  - *a\n", 3, /aliases are not supported/],
      ["services: 3\n", 1, /services must be a list/],
      ["", 1, /empty/],
    ];
    for (const [text, line, reason] of cases) {
      const error = errorOf(text);
      expect(error.code).toBe("ERR_REGISTRY_INVALID");
      expect(error.file).toBe("reg.yaml");
      expect({ line: error.line ?? 1, text }).toEqual({ line, text });
      expect(error.reason).toMatch(reason);
      expect(error.message.startsWith(`reg.yaml:${error.line ?? ""}`)).toBe(true);
    }
  });

  it("turns any text into a snapshot or a coded error, never another exception", () => {
    const yamlish = fc.string({ unit: fc.constantFrom(..."services:-name{}[],&*!|> \n\t'\"0123.:#adr"), maxLength: 200 });
    fc.assert(
      fc.property(fc.oneof(yamlish, fc.string({ maxLength: 200 })), (text) => {
        try {
          parseRegistry({ text, file: "f" });
        } catch (error) {
          expect(error).toBeInstanceOf(DestinationError);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
