// Test support: a loopback fake Kubernetes API server (`@meshtls/kubernetes/testing`).
export { FAKE_API_AUDIENCE, FAKE_RESOURCES, startFakeApiServer, statusBody } from "./testing/fake-api-server.ts";
export type { FakeApiServer, FakeApiServerOptions, FakeResource, FakeToken, KubeObject, RecordedRequest, TokenReviewAnswer } from "./testing/fake-api-server.ts";
