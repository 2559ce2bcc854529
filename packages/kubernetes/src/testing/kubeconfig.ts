/**
 * A kubeconfig of one cluster, one user and one context naming both, as YAML. `cluster` and `user` are the
 * entries' inline YAML maps, e.g. `{server: "https://127.0.0.1:6443", certificate-authority: "/ca.crt"}` and
 * `{token: abc}`.
 */
export function kubeconfigYaml(options: { cluster: string; user: string }): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: test",
    `  cluster: ${options.cluster}`,
    "users:",
    "- name: test",
    `  user: ${options.user}`,
    "contexts:",
    "- name: test",
    "  context: {cluster: test, user: test}",
    "current-context: test",
    "",
  ].join("\n");
}

/** A kubeconfig for a fake API server at `url` (its self-signed certificate not verified) with a bearer `token`. */
export function fakeApiKubeconfig(url: string, token: string): string {
  return kubeconfigYaml({ cluster: `{server: "${url}", insecure-skip-tls-verify: true}`, user: `{token: ${token}}` });
}
