/**
 * The reconcile as a checklist, on the real control plane: an API error on
 * one node's NodeModules does not keep the other nodes from converging nor
 * the request's status from being written; the error still goes back to the
 * queue (a ReconcileError Event on the request) and the request converges
 * once it clears. The error is real: a ValidatingAdmissionPolicy answers the
 * node's write with 413 (reason RequestEntityTooLarge), which is neither a
 * refusal (403/422, reported Denied/InvalidSpec) nor anything the controller
 * handles.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdmissionregistrationV1Api, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { API_VERSION, GROUP, NODE_MODULES_PLURAL, VERSION } from '../src/api/types.ts';
import { applyManifests } from '../src/kube/apply.ts';
import { errorMessage } from '../src/observability/logger.ts';
import { eventually, useControlPlane } from './support/cluster.ts';
import { createRequest, ensureNode, getRequest, listRuns } from './support/objects.ts';
import { startController } from './support/operator.ts';

const env = useControlPlane({
  setup: async (e) => {
    const controller = await startController(e.kc);
    e.onStop(() => controller.stop());
  },
});

const POLICY = `apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: { name: test-fail-runs-on-bad-node }
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - { apiGroups: [kmod.dev], apiVersions: ['*'], operations: [CREATE, UPDATE], resources: [nodemodules] }
  validations:
    - expression: "object.metadata.name != 'rc-bad'"
      message: injected failure for node rc-bad
      reason: RequestEntityTooLarge
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: { name: test-fail-runs-on-bad-node }
spec:
  policyName: test-fail-runs-on-bad-node
  validationActions: [Deny]
`;

test('an API error on one node does not skip the other nodes or the status write; it is retried', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-reconcile-test-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'policy.yaml'), POLICY);
  await applyManifests(env.kc, [join(dir, 'policy.yaml')]);
  const crs = env.kc.makeApiClient(CustomObjectsApi);
  await eventually('the injected failure to be in force', async () => {
    try {
      const probe = { apiVersion: API_VERSION, kind: 'NodeModules', metadata: { name: 'rc-bad' }, spec: {} };
      await crs.createClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: NODE_MODULES_PLURAL,
        body: probe,
      });
      await crs.deleteClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: NODE_MODULES_PLURAL,
        name: 'rc-bad',
      });
      return false;
    } catch (err) {
      return /injected failure for node rc-bad/.test(errorMessage(err));
    }
  });
  // rc-bad sorts first: before, its failed create ended the reconcile before rc-good was reached.
  await ensureNode(env.kc, 'rc-bad', { pool: 'rc' });
  await ensureNode(env.kc, 'rc-good', { pool: 'rc' });
  await createRequest(env.kc, 'rc-req', { module: 'dummy', nodeSelector: { pool: 'rc' } });

  await eventually('rc-good dispatched to', async () =>
    (await listRuns(env.kc)).some((r) => r.nodeName === 'rc-good'),
  );
  const req = await eventually('a status counting both nodes', async () => {
    const r = await getRequest(env.kc, 'rc-req');
    return r?.status?.counts?.total === 2 ? r : undefined;
  });
  assert.equal(req.status?.counts?.pending, 2, 'both pending: rc-bad is not dispatched yet, not failed');
  assert.equal(req.status?.phase, 'Pending');
  assert.equal((await listRuns(env.kc)).filter((r) => r.nodeName === 'rc-bad').length, 0);
  const core = env.kc.makeApiClient(CoreV1Api);
  const retry = await eventually('a ReconcileError Event naming the injected failure', async () =>
    (await core.listNamespacedEvent({ namespace: 'default' })).items.find(
      (e) => e.involvedObject.name === 'rc-req' && e.reason === 'ReconcileError',
    ),
  );
  assert.match(retry.message ?? '', /injected failure for node rc-bad/);

  // The failure clears: the queue's retry dispatches rc-bad too.
  const adm = env.kc.makeApiClient(AdmissionregistrationV1Api);
  await adm.deleteValidatingAdmissionPolicyBinding({ name: 'test-fail-runs-on-bad-node' });
  await adm.deleteValidatingAdmissionPolicy({ name: 'test-fail-runs-on-bad-node' });
  await eventually(
    'rc-bad dispatched to, once the failure cleared',
    async () => (await listRuns(env.kc)).some((r) => r.nodeName === 'rc-bad'),
    60_000,
  );
});
