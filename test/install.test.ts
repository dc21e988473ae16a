/**
 * The README's first install step, `kubectl apply -f crds/`, run exactly as
 * written (from the project root) with the cluster's own kubectl on a fresh
 * control plane without CRDs. kubectl asks the API server for strict field
 * validation, which decodes the CRD strictly: a stray key in a schema (once,
 * a comma inside a YAML flow-mapping `description:` became one) fails the
 * install, while the project's own installer and Helm would accept it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiextensionsV1Api } from '@kubernetes/client-node';
import { eventually, useControlPlane } from './support/cluster.ts';
import { kubectlPath } from './support/kubectl.ts';

const root = resolve(import.meta.dirname, '..');
const env = useControlPlane({ crds: false, controllerManager: false });

function kubectl(args: string[]) {
  return spawnSync(kubectlPath(), args, {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, KUBECONFIG: env.cp.kubeconfigPath },
  });
}

test('kubectl apply -f crds/ installs both CRDs on a fresh cluster, and they become Established', async () => {
  const r = kubectl(['apply', '-f', 'crds/']);
  assert.equal(r.status, 0, `kubectl apply -f crds/ failed:\n${r.stderr}`);
  assert.match(r.stdout, /customresourcedefinition.apiextensions.k8s.io\/modulerequests.kmod.dev created/);
  assert.match(r.stdout, /customresourcedefinition.apiextensions.k8s.io\/nodemodules.kmod.dev created/);
  assert.equal(r.stderr, '', 'no warnings (kubectl prints unknown-field warnings on stderr)');
  const api = env.kc.makeApiClient(ApiextensionsV1Api);
  for (const name of ['modulerequests.kmod.dev', 'nodemodules.kmod.dev']) {
    await eventually(`${name} Established`, async () => {
      const crd = await api.readCustomResourceDefinition({ name });
      return crd.status?.conditions?.find((c) => c.type === 'Established')?.status === 'True';
    });
  }
});

test('the same kubectl refuses the CRD as it once shipped (a comma inside a flow-mapping description)', () => {
  // crds/ with the two descriptions unquoted again, as they were: proves this kubectl decodes
  // strictly, so the test above can fail.
  const dir = join(env.cp.dir, 'old-crds');
  mkdirSync(dir, { recursive: true });
  const current = readFileSync(join(root, 'crds/kmod.dev_modulerequests.yaml'), 'utf8');
  const old = current
    .replace(
      "description: 'The target in words, for kubectl get.'",
      'description: The target in words, for kubectl get.',
    )
    .replace(
      "description: 'succeeded/total, for kubectl get.'",
      'description: succeeded/total, for kubectl get.',
    );
  assert.notEqual(old, current, 'the quoted descriptions are in crds/');
  writeFileSync(join(dir, 'kmod.dev_modulerequests.yaml'), old);
  const r = kubectl(['apply', '-f', dir]);
  assert.notEqual(r.status, 0, `kubectl must refuse it; it printed:\n${r.stdout}`);
  assert.match(r.stderr, /strict decoding error: unknown field ".*for kubectl get\."/);
});
