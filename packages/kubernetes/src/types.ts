/**
 * The fields of Kubernetes objects meshtls reads, typed loosely on purpose:
 * the API server is trusted for shape, but every field used is checked where
 * it is read (a missing optional field must not throw).
 */

export interface ObjectMeta {
  name: string;
  namespace?: string;
  resourceVersion?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { apiVersion?: string; kind: string; name: string; controller?: boolean }[];
  deletionTimestamp?: string;
}

/** Any object the watch loop caches. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

export interface EndpointSliceEndpoint {
  addresses: string[];
  conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
  hostname?: string;
  nodeName?: string;
  zone?: string;
  hints?: { forZones?: { name: string }[] };
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointSlice extends KubeObject {
  addressType: "IPv4" | "IPv6" | "FQDN";
  endpoints?: EndpointSliceEndpoint[] | null;
  ports?: { name?: string | null; port?: number | null; protocol?: string; appProtocol?: string }[] | null;
}

export interface ServicePort {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: string;
}

export interface Service extends KubeObject {
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ports?: ServicePort[];
    internalTrafficPolicy?: string;
  };
}

export interface Container {
  name: string;
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number; hostPort?: number; protocol?: string }[];
}

export interface Pod extends KubeObject {
  spec?: {
    serviceAccountName?: string;
    hostNetwork?: boolean;
    nodeName?: string;
    containers?: Container[];
    initContainers?: Container[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip: string }[];
    hostIP?: string;
    hostIPs?: { ip: string }[];
  };
}

export type Namespace = KubeObject;
