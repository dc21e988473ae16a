/**
 * Smoke tests that prove the harness is a real control plane: CRDs become
 * Established, schema and CEL rules refuse bad objects with the server's
 * message, kubectl works with the generated kubeconfig, and the garbage
 * collector deletes owned children.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { GROUP, VERSION } from '../src/api/types.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { kubectlPath } from './support/kubectl.ts';

const env = useControlPlane();
const mr = { group: GROUP, version: VERSION, plural: 'modulerequests' };

test('the CRDs from crds/ are Established', async () => {
  const api = env.kc.makeApiClient(ApiextensionsV1Api);
  for (const name of ['modulerequests.kmod.dev', 'nodemodules.kmod.dev']) {
    const crd = await api.readCustomResourceDefinition({ name });
    assert.equal(crd.status?.conditions?.find((c) => c.type === 'Established')?.status, 'True', name);
  }
});

test('/version reports the real Kubernetes version', () => {
  const out = execFileSync(kubectlPath(), ['--kubeconfig', env.cp.kubeconfigPath, 'version', '-o', 'json'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const v = JSON.parse(out) as { serverVersion: { gitVersion: string; major: string; minor: string } };
  assert.match(v.serverVersion.gitVersion, /^v1\.\d+\.\d+$/);
  assert.equal(
    `v${v.serverVersion.major}.${v.serverVersion.minor}`,
    v.serverVersion.gitVersion.replace(/\.\d+$/, ''),
  );
});

test('a valid object is stored and read back, with defaults applied', async () => {
  const api = env.kc.makeApiClient(CustomObjectsApi);
  await api.createClusterCustomObject({
    ...mr,
    body: {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'ModuleRequest',
      metadata: { name: 'smoke' },
      spec: { module: 'snd-hda-intel', nodeName: 'n1' },
    },
  });
  const got = (await api.getClusterCustomObject({ ...mr, name: 'smoke' })) as {
    spec: Record<string, unknown>;
  };
  assert.deepEqual(got.spec, {
    module: 'snd-hda-intel',
    nodeName: 'n1',
    action: 'Load',
    wait: 'Process',
    timeoutSeconds: 60,
  });
});

test('invalid objects are refused with the server’s message (schema and CEL)', async () => {
  const api = env.kc.makeApiClient(CustomObjectsApi);
  const create = (name: string, spec: unknown) =>
    api.createClusterCustomObject({
      ...mr,
      body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'ModuleRequest', metadata: { name }, spec },
    });
  await assert.rejects(
    create('bad-schema', { module: 'x', nodeName: 'n1', timeoutSeconds: 0 }),
    (err: Error) => {
      assert.match(
        String((err as { body?: unknown }).body),
        /spec\.timeoutSeconds: Invalid value: 0: spec\.timeoutSeconds in body should be greater than or equal to 1/,
      );
      return true;
    },
  );
  await assert.rejects(create('bad-cel', { module: 'x', nodeName: 'n1', nodeSelector: {} }), (err: Error) => {
    assert.match(
      String((err as { body?: unknown }).body),
      /exactly one of spec\.nodeName or spec\.nodeSelector must be set/,
    );
    return true;
  });
});

test('kubectl talks to it with the generated kubeconfig', async () => {
  assert.ok(existsSync(env.cp.kubeconfigPath));
  await env.kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
    ...mr,
    body: {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'ModuleRequest',
      metadata: { name: 'kubectl-smoke' },
      spec: { module: 'snd-hda-intel', nodeName: 'n1' },
    },
  });
  const out = execFileSync(
    kubectlPath(),
    ['--kubeconfig', env.cp.kubeconfigPath, 'get', 'mr', 'kubectl-smoke', '-o', 'jsonpath={.spec.module}'],
    {
      encoding: 'utf8',
    },
  );
  assert.equal(out, 'snd-hda-intel');
});

test('an owned child is garbage-collected after its owner is deleted', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  const owner = await core.createNamespacedConfigMap({
    namespace: 'default',
    body: { metadata: { name: 'owner' } },
  });
  await core.createNamespacedConfigMap({
    namespace: 'default',
    body: {
      metadata: {
        name: 'child',
        ownerReferences: [
          { apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid: owner.metadata?.uid ?? '' },
        ],
      },
    },
  });
  await core.deleteNamespacedConfigMap({ namespace: 'default', name: 'owner' });
  await eventually(
    'the child to be garbage-collected',
    async () => {
      try {
        await core.readNamespacedConfigMap({ namespace: 'default', name: 'child' });
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 404;
      }
    },
    30_000,
  );
});

test('namespace deletion finishes (the namespace controller runs)', async () => {
  const core = env.kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'doomed' } } });
  await core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'c' } } });
  await core.deleteNamespace({ name: 'doomed' });
  await eventually(
    'namespace doomed to be gone',
    async () => {
      try {
        await core.readNamespace({ name: 'doomed' });
        return false;
      } catch (err) {
        return (err as { code?: number }).code === 404;
      }
    },
    30_000,
  );
});
