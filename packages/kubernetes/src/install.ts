/**
 * The control plane's manifests (`meshtls install`), built from typed
 * objects: Linkerd's layout (`charts/linkerd-control-plane`) for meshtls's
 * three services. Certificates and keys are passed in: this module does no
 * crypto and reads no files.
 */

import { controlPlaneIdentity, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY } from "./inject.ts";
import { CONTROL_PLANE_NS_LABEL } from "./pod-facts.ts";

type Json = Record<string, unknown>;

export const CONTROL_PLANE_COMPONENT_LABEL = "linkerd.io/control-plane-component";
export const ISSUER_SECRET = "meshtls-identity-issuer";
export const DESTINATION_TLS_SECRET = "meshtls-destination-tls";
export const INJECTOR_TLS_SECRET = "meshtls-injector-tls";
/** The Secret cert-manager's CA Issuer signs the identity issuer with: the trust anchor and its key (created by the operator). */
export const TRUST_ANCHOR_SECRET = "meshtls-trust-anchor";
export const WEBHOOK_CONFIGURATION = "meshtls-proxy-injector-webhook-config";

/** A certificate and key in PEM. */
export interface PemPair {
  certificatePem: string;
  privateKeyPem: string;
}

export interface InstallOptions {
  /** Control-plane namespace. Default `meshtls`. */
  namespace?: string;
  trustDomain?: string;
  clusterDomain?: string;
  /** Image registry: `<registry>/<app>:<tag>`. Default `ghcr.io/meshtls`. */
  registry?: string;
  /** Image tag. Default `0.1.0`. */
  tag?: string;
  /** Replicas of each Deployment. Default 1, or 3 with `ha`. */
  replicas?: number;
  /** High availability: 3 replicas spread over nodes (required anti-affinity), and the webhook failing closed is still off. */
  ha?: boolean;
  /** The trust anchors PEM: the trust-roots ConfigMap. */
  trustAnchorsPem: string;
  /**
   * Where the identity issuer comes from: a Secret made from `meshtls certs`
   * output (`files`), or one that cert-manager maintains from the
   * `meshtls-trust-anchor` Secret (`cert-manager`: emits the Issuer and Certificates).
   */
  issuer: { from: "files"; issuer: PemPair; destination: PemPair } | { from: "cert-manager" };
  /** The injector's serving certificate and the CA bundle the API server checks it with (ignored with cert-manager, which injects its own). */
  injector?: PemPair & { caBundlePem: string };
  /** The proxies' policy until the controller answers, and the controller's default. Default `all-unauthenticated`. */
  defaultInboundPolicy?: string;
}

const base64 = (text: string): string => Buffer.from(text).toString("base64");

/** Every object of the control plane, in apply order (namespace and CRDs first, the webhook last). */
export function buildInstallManifests(options: InstallOptions): Json[] {
  const ns = options.namespace ?? "meshtls";
  const trustDomain = options.trustDomain ?? "cluster.local";
  const clusterDomain = options.clusterDomain ?? "cluster.local";
  const registry = options.registry ?? "ghcr.io/meshtls";
  const tag = options.tag ?? "0.1.0";
  const replicas = options.replicas ?? (options.ha === true ? 3 : 1);
  const policy = options.defaultInboundPolicy ?? "all-unauthenticated";
  const names = { controlPlaneNamespace: ns, trustDomain };
  const labels = (component: string): Record<string, string> => ({ [CONTROL_PLANE_COMPONENT_LABEL]: component, [CONTROL_PLANE_NS_LABEL]: ns });
  const meta = (name: string, component?: string, namespaced = true): Json => ({
    name,
    ...(namespaced ? { namespace: ns } : {}),
    ...(component === undefined ? {} : { labels: labels(component) }),
  });
  const objects: Json[] = [];

  objects.push({
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: ns, labels: { "linkerd.io/is-control-plane": "true", "config.linkerd.io/admission-webhooks": "disabled", [CONTROL_PLANE_NS_LABEL]: ns } },
  });
  objects.push(...policyCrds(ns));
  objects.push({ apiVersion: "v1", kind: "ConfigMap", metadata: meta(TRUST_ROOTS_CONFIGMAP, "identity"), data: { [TRUST_ROOTS_KEY]: options.trustAnchorsPem } });

  if (options.issuer.from === "files") {
    const tlsSecret = (name: string, component: string, pair: PemPair): Json => ({
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: meta(name, component),
      data: { "tls.crt": base64(pair.certificatePem), "tls.key": base64(pair.privateKeyPem) },
    });
    objects.push(tlsSecret(ISSUER_SECRET, "identity", options.issuer.issuer), tlsSecret(DESTINATION_TLS_SECRET, "destination", options.issuer.destination));
  } else {
    // Linkerd's cert-manager setup: a CA Issuer on the trust anchor signs the identity issuer (48 h, renewed 25 h before).
    objects.push(
      { apiVersion: "cert-manager.io/v1", kind: "Issuer", metadata: meta("meshtls-trust-anchor"), spec: { ca: { secretName: TRUST_ANCHOR_SECRET } } },
      {
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: meta(ISSUER_SECRET),
        spec: {
          secretName: ISSUER_SECRET,
          duration: "48h",
          renewBefore: "25h",
          issuerRef: { name: "meshtls-trust-anchor", kind: "Issuer" },
          commonName: `identity.${ns}.${trustDomain}`,
          dnsNames: [`identity.${ns}.${trustDomain}`],
          isCA: true,
          privateKey: { algorithm: "ECDSA", size: 256 },
          usages: ["cert sign", "crl sign", "server auth", "client auth"],
        },
      },
      { apiVersion: "cert-manager.io/v1", kind: "Issuer", metadata: meta("meshtls-identity-issuer"), spec: { ca: { secretName: ISSUER_SECRET } } },
      {
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: meta(DESTINATION_TLS_SECRET),
        spec: {
          secretName: DESTINATION_TLS_SECRET,
          duration: "24h",
          renewBefore: "8h",
          issuerRef: { name: "meshtls-identity-issuer", kind: "Issuer" },
          dnsNames: [controlPlaneIdentity("destination", names)],
          privateKey: { algorithm: "ECDSA", size: 256 },
          usages: ["server auth", "client auth"],
        },
      },
      { apiVersion: "cert-manager.io/v1", kind: "Issuer", metadata: meta("meshtls-injector-selfsigned"), spec: { selfSigned: {} } },
      {
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: meta(INJECTOR_TLS_SECRET),
        spec: {
          secretName: INJECTOR_TLS_SECRET,
          duration: "8760h",
          issuerRef: { name: "meshtls-injector-selfsigned", kind: "Issuer" },
          dnsNames: [`meshtls-injector.${ns}.svc`],
          privateKey: { algorithm: "ECDSA", size: 256 },
        },
      },
    );
  }
  if (options.issuer.from === "files" && options.injector !== undefined) {
    objects.push({
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: meta(INJECTOR_TLS_SECRET, "proxy-injector"),
      data: { "tls.crt": base64(options.injector.certificatePem), "tls.key": base64(options.injector.privateKeyPem) },
    });
  }

  // ServiceAccounts and least-privilege RBAC.
  for (const sa of ["identity", "destination", "injector"]) objects.push({ apiVersion: "v1", kind: "ServiceAccount", metadata: meta(sa, sa === "injector" ? "proxy-injector" : sa) });
  const clusterRole = (component: string, rules: Json[]): Json[] => [
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name: `meshtls-${ns}-${component}`, labels: labels(component) }, rules },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: `meshtls-${ns}-${component}`, labels: labels(component) },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: `meshtls-${ns}-${component}` },
      subjects: [{ kind: "ServiceAccount", name: component === "proxy-injector" ? "injector" : component, namespace: ns }],
    },
  ];
  objects.push(...clusterRole("identity", [{ apiGroups: ["authentication.k8s.io"], resources: ["tokenreviews"], verbs: ["create"] }]));
  // Identity alone may read the issuer Secret (it is mounted, and named here so no other ServiceAccount gets it by accident).
  objects.push(
    { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: meta("meshtls-identity-issuer", "identity"), rules: [{ apiGroups: [""], resources: ["secrets"], resourceNames: [ISSUER_SECRET], verbs: ["get", "watch"] }] },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: meta("meshtls-identity-issuer", "identity"),
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "meshtls-identity-issuer" },
      subjects: [{ kind: "ServiceAccount", name: "identity", namespace: ns }],
    },
  );
  objects.push(
    ...clusterRole("destination", [
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["pods", "services", "namespaces"], verbs: ["list", "watch"] },
      { apiGroups: ["policy.linkerd.io"], resources: ["servers", "serverauthorizations", "authorizationpolicies", "meshtlsauthentications", "networkauthentications"], verbs: ["list", "watch"] },
    ]),
  );
  objects.push(...clusterRole("proxy-injector", [{ apiGroups: [""], resources: ["namespaces"], verbs: ["get"] }]));

  // Deployments and Services.
  const security = { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] }, seccompProfile: { type: "RuntimeDefault" } };
  const deployment = (o: { name: string; component: string; serviceAccount: string; image: string; args: string[]; ports: Json[]; adminPort: number; volumes: Json[]; mounts: Json[] }): Json => {
    // The injector answers its probes on its HTTPS port; the others on a plain admin port.
    const https = o.ports.some((p) => p.containerPort === o.adminPort);
    const probe = (path: string): Json => ({ path, port: o.adminPort, ...(https ? { scheme: "HTTPS" } : {}) });
    const podLabels = labels(o.component);
    return {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: meta(o.name, o.component),
      spec: {
        replicas,
        selector: { matchLabels: podLabels },
        template: {
          metadata: { labels: podLabels },
          spec: {
            serviceAccountName: o.serviceAccount,
            automountServiceAccountToken: true,
            ...(options.ha === true
              ? { affinity: { podAntiAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: podLabels }, topologyKey: "kubernetes.io/hostname" }] } } }
              : {}),
            containers: [
              {
                name: o.component,
                image: `${registry}/${o.image}:${tag}`,
                imagePullPolicy: "IfNotPresent",
                args: o.args,
                ports: https ? o.ports : [...o.ports, { name: "admin", containerPort: o.adminPort }],
                livenessProbe: { httpGet: probe("/live"), initialDelaySeconds: 10 },
                readinessProbe: { httpGet: probe("/ready") },
                securityContext: security,
                volumeMounts: o.mounts,
              },
            ],
            volumes: o.volumes,
          },
        },
      },
    };
  };
  const service = (name: string, component: string, ports: Json[]): Json => ({ apiVersion: "v1", kind: "Service", metadata: meta(name, component), spec: { type: "ClusterIP", selector: labels(component), ports } });
  const trustRoots = { name: "trust-roots", configMap: { name: TRUST_ROOTS_CONFIGMAP } };
  const trustRootsMount = { name: "trust-roots", mountPath: "/var/run/meshtls/trust-roots", readOnly: true };
  const anchors = `/var/run/meshtls/trust-roots/${TRUST_ROOTS_KEY}`;

  objects.push(
    deployment({
      name: "meshtls-identity",
      component: "identity",
      serviceAccount: "identity",
      image: "identity",
      args: ["--source", "kubernetes", "--trust-anchors", anchors, "--issuer-dir", "/var/run/meshtls/issuer", "--trust-domain", trustDomain, "--control-namespace", ns, "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9990"],
      ports: [{ name: "grpc", containerPort: 8080 }],
      adminPort: 9990,
      volumes: [trustRoots, { name: "issuer", secret: { secretName: ISSUER_SECRET } }],
      mounts: [trustRootsMount, { name: "issuer", mountPath: "/var/run/meshtls/issuer", readOnly: true }],
    }),
    service("meshtls-identity", "identity", [{ name: "grpc", port: 8080, targetPort: 8080 }]),
    deployment({
      name: "meshtls-destination",
      component: "destination",
      serviceAccount: "destination",
      image: "destination",
      args: [
        "--source", "kubernetes",
        "--trust-domain", trustDomain,
        "--control-namespace", ns,
        "--cluster-domain", clusterDomain,
        "--listen", "0.0.0.0:8086",
        "--policy-addr", "0.0.0.0:8090",
        "--default-inbound-policy", policy,
        "--admin", "0.0.0.0:9996",
        "--tls-cert", "/var/run/meshtls/tls/tls.crt",
        "--tls-key", "/var/run/meshtls/tls/tls.key",
      ],
      ports: [{ name: "grpc", containerPort: 8086 }, { name: "policy", containerPort: 8090 }],
      adminPort: 9996,
      volumes: [{ name: "tls", secret: { secretName: DESTINATION_TLS_SECRET } }],
      mounts: [{ name: "tls", mountPath: "/var/run/meshtls/tls", readOnly: true }],
    }),
    service("meshtls-destination", "destination", [{ name: "grpc", port: 8086, targetPort: 8086 }, { name: "policy", port: 8090, targetPort: 8090 }]),
    deployment({
      name: "meshtls-injector",
      component: "proxy-injector",
      serviceAccount: "injector",
      image: "injector",
      args: [
        "--listen", "0.0.0.0:8443",
        "--tls-cert", "/var/run/meshtls/tls/tls.crt",
        "--tls-key", "/var/run/meshtls/tls/tls.key",
        "--trust-anchors", anchors,
        "--control-namespace", ns,
        "--trust-domain", trustDomain,
        "--cluster-domain", clusterDomain,
        "--proxy-image", `${registry}/proxy:${tag}`,
        "--init-image", `${registry}/cli:${tag}`,
        "--default-inbound-policy", policy,
      ],
      ports: [{ name: "https", containerPort: 8443 }],
      adminPort: 8443,
      volumes: [trustRoots, { name: "tls", secret: { secretName: INJECTOR_TLS_SECRET } }],
      mounts: [trustRootsMount, { name: "tls", mountPath: "/var/run/meshtls/tls", readOnly: true }],
    }),
    service("meshtls-injector", "proxy-injector", [{ name: "https", port: 443, targetPort: 8443 }]),
  );

  // The webhook (Linkerd's `proxy-injector-rbac.yaml`): pods at CREATE, never the control plane, kube-system or cert-manager.
  const webhook: Json = {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: {
      name: WEBHOOK_CONFIGURATION,
      labels: labels("proxy-injector"),
      ...(options.issuer.from === "cert-manager" ? { annotations: { "cert-manager.io/inject-ca-from": `${ns}/${INJECTOR_TLS_SECRET}` } } : {}),
    },
    webhooks: [
      {
        name: "meshtls-proxy-injector.linkerd.io",
        namespaceSelector: {
          matchExpressions: [
            { key: "config.linkerd.io/admission-webhooks", operator: "NotIn", values: ["disabled"] },
            { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", "cert-manager"] },
          ],
        },
        objectSelector: { matchExpressions: [{ key: CONTROL_PLANE_COMPONENT_LABEL, operator: "DoesNotExist" }] },
        clientConfig: {
          service: { name: "meshtls-injector", namespace: ns, path: "/", port: 443 },
          ...(options.issuer.from === "files" && options.injector !== undefined ? { caBundle: base64(options.injector.caBundlePem) } : {}),
        },
        failurePolicy: "Ignore",
        admissionReviewVersions: ["v1"],
        rules: [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }],
        sideEffects: "None",
        timeoutSeconds: 10,
      },
    ],
  };
  objects.push(webhook);
  return objects;
}

/**
 * The policy.linkerd.io CRDs meshtls-destination reads, at the versions it
 * watches. Their schemas keep `spec` open (x-kubernetes-preserve-unknown-fields):
 * meshtls-destination validates each object itself and leaves out (and logs)
 * one it cannot use.
 */
export function policyCrds(namespace = "meshtls"): Json[] {
  const crd = (kind: string, plural: string, version: string, shortNames: string[]): Json => ({
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.policy.linkerd.io`, labels: { [CONTROL_PLANE_NS_LABEL]: namespace } },
    spec: {
      group: "policy.linkerd.io",
      scope: "Namespaced",
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List`, shortNames },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: "object", required: ["spec"], properties: { spec: { type: "object", "x-kubernetes-preserve-unknown-fields": true } } } },
        },
      ],
    },
  });
  return [
    crd("Server", "servers", "v1beta3", ["srv"]),
    crd("ServerAuthorization", "serverauthorizations", "v1beta1", ["saz", "serverauthz", "srvauthz"]),
    crd("AuthorizationPolicy", "authorizationpolicies", "v1alpha1", ["authzpolicy"]),
    crd("MeshTLSAuthentication", "meshtlsauthentications", "v1alpha1", ["meshtlsauthn"]),
    crd("NetworkAuthentication", "networkauthentications", "v1alpha1", ["netauthn"]),
  ];
}
