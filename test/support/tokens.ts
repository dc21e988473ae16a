/**
 * Real agent credentials for admission and RBAC tests: a pod of the agent's
 * service account on a node (as the DaemonSet would create it) and a
 * TokenRequest bound to that pod, so the token carries the node's name
 * (authentication.kubernetes.io/node-name) exactly as a running agent's does.
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { kubeconfigYaml } from '../../src/cluster/controlplane.ts';
import type { TestEnv } from './cluster.ts';
import { ensureNode } from './objects.ts';

/** A kubeconfig holding a token of `serviceAccount` bound to a pod on `node` (Node and pod created as needed). */
export async function podBoundKubeConfig(
  env: TestEnv,
  node: string,
  { namespace = 'kmod-system', serviceAccount = 'kmod-agent' } = {},
): Promise<KubeConfig> {
  const core = env.kc.makeApiClient(CoreV1Api);
  await ensureNode(env.kc, node);
  const pod = await core.createNamespacedPod({
    namespace,
    body: {
      metadata: { generateName: `${serviceAccount}-${node}-` },
      spec: {
        nodeName: node,
        serviceAccountName: serviceAccount,
        containers: [{ name: 'agent', image: 'kmod-operator:test' }],
      },
    },
  });
  const tr = await core.createNamespacedServiceAccountToken({
    name: serviceAccount,
    namespace,
    body: {
      spec: {
        audiences: [],
        expirationSeconds: 3600,
        boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name, uid: pod.metadata?.uid },
      },
    },
  });
  const kc = new KubeConfig();
  kc.loadFromString(
    kubeconfigYaml(env.cp.server, env.cp.caPem, tr.status?.token ?? '', `${serviceAccount}-${node}`),
  );
  return kc;
}
