import { Client, credentials, Metadata, Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertifyRequest, DestinationService, GetDestination, IdentityService, type DestinationServer, type IdentityServer } from "./index.js";
import { refuseMalformedRequests } from "./malformed-requests.js";

/** Field 1 with wire type 7 (no such type): no decoder accepts it. */
const MALFORMED = Buffer.from([0x0f, 0x01, 0x02]);

const raw = (bytes: Buffer): Buffer => bytes;

describe("refuseMalformedRequests", () => {
  const plain = new Server();
  const wrapped = new Server();
  const refused: string[] = [];
  const seen: string[] = [];
  let plainAddress = "";
  let wrappedAddress = "";

  beforeAll(async () => {
    const identity: IdentityServer = {
      certify: (call, callback) => {
        seen.push(call.request.identity);
        callback({ code: status.FAILED_PRECONDITION, details: "reached the handler" });
      },
    };
    const destination: DestinationServer = {
      get: (call) => {
        seen.push(call.request.path);
        call.end();
      },
      getProfile: (call) => {
        seen.push(call.request.path);
        call.end();
      },
    };
    plain.addService(IdentityService, identity);
    const onMalformed = (path: string, details: string): void => void refused.push(`${path} ${details}`);
    const id = refuseMalformedRequests(IdentityService, identity, { onMalformed });
    const dst = refuseMalformedRequests(DestinationService, destination, { onMalformed });
    wrapped.addService(id.definition, id.implementation);
    wrapped.addService(dst.definition, dst.implementation);
    const bind = (server: Server): Promise<string> =>
      new Promise((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => (error ? reject(error) : resolve(`127.0.0.1:${port}`))),
      );
    plainAddress = await bind(plain);
    wrappedAddress = await bind(wrapped);
  });
  afterAll(() => {
    plain.forceShutdown();
    wrapped.forceShutdown();
  });

  const unary = (address: string, path: string, body: Buffer): Promise<ServiceError> => {
    const client = new Client(address, credentials.createInsecure());
    return new Promise((resolve) =>
      client.makeUnaryRequest(path, raw, raw, body, new Metadata(), (error) => {
        client.close();
        resolve(error as ServiceError);
      }),
    );
  };
  const serverStream = (address: string, path: string, body: Buffer): Promise<ServiceError | "ended"> => {
    const client = new Client(address, credentials.createInsecure());
    return new Promise((resolve) => {
      const call = client.makeServerStreamRequest(path, raw, raw, body);
      call.on("data", () => undefined);
      call.on("error", (error: ServiceError) => {
        client.close();
        resolve(error);
      });
      call.on("end", () => {
        client.close();
        resolve("ended");
      });
    });
  };

  it("grpc-js alone answers a malformed message INTERNAL (why the wrapper exists)", async () => {
    expect(() => CertifyRequest.decode(MALFORMED)).toThrow();
    expect((await unary(plainAddress, IdentityService.certify.path, MALFORMED)).code).toBe(status.INTERNAL);
  });

  it("answers a malformed unary request INVALID_ARGUMENT without calling the handler", async () => {
    const before = seen.length;
    const error = await unary(wrappedAddress, IdentityService.certify.path, MALFORMED);
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^the Certify request is not a valid protobuf message \(.+\)$/);
    expect(seen.length).toBe(before);
    expect(refused.at(-1)).toBe(`${IdentityService.certify.path} ${error.details}`);
  });

  it("answers a malformed server-streaming request INVALID_ARGUMENT (Get and GetProfile)", async () => {
    const before = seen.length;
    for (const method of [DestinationService.get, DestinationService.getProfile]) {
      const error = await serverStream(wrappedAddress, method.path, MALFORMED);
      expect(error).not.toBe("ended");
      expect((error as ServiceError).code).toBe(status.INVALID_ARGUMENT);
      expect((error as ServiceError).details).toContain(`the ${method.path.split("/").at(-1)} request is not a valid protobuf message`);
    }
    expect(seen.length).toBe(before);
  });

  it("passes well-formed requests to the service's handlers", async () => {
    const certify = Buffer.from(CertifyRequest.encode({ identity: "web", token: Buffer.alloc(0), certificateSigningRequest: Buffer.alloc(0) }).finish());
    expect((await unary(wrappedAddress, IdentityService.certify.path, certify)).code).toBe(status.FAILED_PRECONDITION);
    const get = Buffer.from(GetDestination.encode({ scheme: "k8s", path: "a.b.svc.cluster.local:80", contextToken: "" }).finish());
    expect(await serverStream(wrappedAddress, DestinationService.get.path, get)).toBe("ended");
    expect(seen.slice(-2)).toEqual(["web", "a.b.svc.cluster.local:80"]);
  });
});
