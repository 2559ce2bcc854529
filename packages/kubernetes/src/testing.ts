// Test support: a loopback fake Kubernetes API server and kubeconfigs naming it (`@meshtls/kubernetes/testing`).
export { FAKE_API_AUDIENCE, FAKE_RESOURCES, startFakeApiServer, statusBody } from "./testing/fake-api-server.ts";
export type { FakeApiServer, FakeApiServerOptions, FakeResource, FakeToken, KubeObject, RecordedRequest, TokenReviewAnswer } from "./testing/fake-api-server.ts";
export { fakeApiKubeconfig, kubeconfigYaml } from "./testing/kubeconfig.ts";
