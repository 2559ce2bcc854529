import { credentials, Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CertifyResponse,
  DestinationClient,
  DestinationProfile,
  DestinationService,
  IdentityClient,
  IdentityService,
  type DestinationServer,
  type IdentityServer,
  type Update,
} from "./index.js";
import { dateToTimestamp, timestampToDate } from "./timestamp.js";
import { ipToTcpAddress } from "./net.js";

describe("grpc-js service definitions over a real socket", () => {
  const server = new Server();
  let address = "";
  const validUntil = new Date("2030-01-02T03:04:05.678Z");

  beforeAll(async () => {
    const identity: IdentityServer = {
      certify: (call, callback) => {
        if (call.request.identity === "") {
          callback({ code: status.INVALID_ARGUMENT, details: "identity missing" });
          return;
        }
        callback(null, {
          leafCertificate: Buffer.from(call.request.certificateSigningRequest),
          intermediateCertificates: [Buffer.from([1, 2, 3])],
          validUntil: dateToTimestamp(validUntil),
        });
      },
    };
    const destination: DestinationServer = {
      get: (call) => {
        call.write({ update: { $case: "noEndpoints", value: { exists: call.request.path !== "unknown:80" } } });
        call.write({
          update: { $case: "add", value: { addrs: [{ addr: ipToTcpAddress("fd00::1", 80), weight: 1, metricLabels: {}, tlsIdentity: undefined, protocolHint: undefined, authorityOverride: undefined }], metricLabels: { namespace: "default" } } },
        });
        call.end();
      },
      getProfile: (call) => {
        call.write(DestinationProfile.fromPartial({ fullyQualifiedName: call.request.path.replace(/:\d+$/, ""), retryBudget: { retryRatio: 0.2, minRetriesPerSecond: 10 } }));
        call.end();
      },
    };
    server.addService(IdentityService, identity);
    server.addService(DestinationService, destination);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server.forceShutdown());

  it("serves and calls Identity.Certify", async () => {
    const client = new IdentityClient(address, credentials.createInsecure());
    const response = await new Promise<CertifyResponse>((resolve, reject) =>
      client.certify(
        { identity: "web.default.serviceaccount.identity.meshtls.cluster.local", token: Buffer.from("t"), certificateSigningRequest: Buffer.from([9, 9]) },
        (error, value) => (error ? reject(error) : resolve(value)),
      ),
    );
    expect([...response.leafCertificate]).toEqual([9, 9]);
    expect(response.validUntil && timestampToDate(response.validUntil)).toEqual(validUntil);
    const failure = await new Promise<ServiceError>((resolve) =>
      client.certify({ identity: "", token: Buffer.alloc(0), certificateSigningRequest: Buffer.alloc(0) }, (error) => resolve(error as ServiceError)),
    );
    expect(failure.code).toBe(status.INVALID_ARGUMENT);
    client.close();
  });

  it("streams Destination.Get with exact IPv6 halves", async () => {
    const client = new DestinationClient(address, credentials.createInsecure());
    const updates: Update[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.get({ scheme: "k8s", path: "web.default.svc.cluster.local:80", contextToken: "" });
      call.on("data", (u: Update) => updates.push(u));
      call.on("end", resolve);
      call.on("error", reject);
    });
    expect(updates[0]?.update).toEqual({ $case: "noEndpoints", value: { exists: true } });
    const add = updates[1]?.update;
    expect(add?.$case === "add" && add.value.addrs[0]?.addr?.ip?.ip).toEqual({ $case: "ipv6", value: { first: 0xfd00n << 48n, last: 1n } });
    client.close();
  });

  it("streams Destination.GetProfile", async () => {
    const client = new DestinationClient(address, credentials.createInsecure());
    const profiles: DestinationProfile[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.getProfile({ scheme: "", path: "web.default.svc.cluster.local:80", contextToken: "" });
      call.on("data", (p: DestinationProfile) => profiles.push(p));
      call.on("end", resolve);
      call.on("error", reject);
    });
    expect(profiles.map((p) => [p.fullyQualifiedName, p.retryBudget?.minRetriesPerSecond])).toEqual([["web.default.svc.cluster.local", 10]]);
    client.close();
  });
});

describe("DestinationProfile on the wire", () => {
  it("uses linkerd2-proxy-api's field numbers (destination.proto): name 5, opaque 4, retry budget 2, endpoint 6", () => {
    const bytes = DestinationProfile.encode(
      DestinationProfile.fromPartial({ fullyQualifiedName: "a", opaqueProtocol: true, retryBudget: { minRetriesPerSecond: 1 }, endpoint: { weight: 2 } }),
    ).finish();
    // Fields in ts-proto's order of declaration: 5 (0x2a "a"), 4 (0x20 1), 2 (0x12 {2: 1}), 6 (0x32 {3: 2}).
    expect(Buffer.from(bytes).toString("hex")).toBe("2a0161" + "2001" + "12021001" + "32021802");
  });
});

