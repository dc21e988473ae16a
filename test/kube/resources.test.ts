import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { useControlPlane } from '../support/cluster.ts';
import {
  GROUP,
  LABEL_REQUEST_NAME,
  REQUEST_PLURAL,
  VERSION,
  type ModuleRequest,
  type ModuleRun,
} from '../../src/api/types.ts';
import { isConflict, statusCode } from '../../src/kube/errors.ts';
import { Resources, retryOnConflict } from '../../src/kube/resources.ts';

const env = useControlPlane({ controllerManager: false });

function newRun(name: string, nodeName: string, request = 'r'): ModuleRun {
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'ModuleRun',
    metadata: { name, labels: { [LABEL_REQUEST_NAME]: request } },
    spec: { nodeName, module: 'dummy', wait: 'Process', timeoutSeconds: 10 },
  };
}

void describe('Resources', () => {
  let res: Resources;

  before(() => {
    res = new Resources(env.kc, { pageSize: 2 });
  });

  /** Creates a ModuleRequest for node n1 (each test its own, so that each can run alone). */
  const createRequest = (name: string) =>
    env.kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: REQUEST_PLURAL,
      body: {
        apiVersion: `${GROUP}/${VERSION}`,
        kind: 'ModuleRequest',
        metadata: { name },
        spec: { module: 'dummy', nodeName: 'n1' },
      },
    });

  void it('gets a ModuleRequest, undefined when missing', async () => {
    assert.equal(await res.getRequest('nope'), undefined);
    await createRequest('req');
    const req = await res.getRequest('req');
    assert.equal(req?.spec.module, 'dummy');
    assert.equal(req?.spec.wait, 'Process', 'CRD defaults applied');
  });

  void it('merge-patches request status: sent fields replace, absent fields stay, spec is untouched', async () => {
    await createRequest('req-status');
    const first = await res.patchRequestStatus('req-status', {
      observedGeneration: 1,
      phase: 'Running',
      counts: { total: 1, pending: 0, running: 1, succeeded: 0, failed: 0 },
      nodes: [{ nodeName: 'n1', phase: 'Running' }],
    });
    assert.equal(first.status?.phase, 'Running');
    const second: ModuleRequest = await res.patchRequestStatus('req-status', {
      phase: 'Succeeded',
      progress: '1/1',
      nodes: [{ nodeName: 'n1', phase: 'Succeeded', exitCode: 0 }],
    });
    assert.equal(second.status?.phase, 'Succeeded');
    assert.equal(second.status?.progress, '1/1');
    assert.equal(second.status?.observedGeneration, 1, 'absent field kept');
    assert.equal(second.status?.counts?.running, 1, 'absent field kept');
    assert.deepEqual(
      second.status?.nodes,
      [{ nodeName: 'n1', phase: 'Succeeded', exitCode: 0 }],
      'array replaced',
    );
    assert.equal(second.metadata.generation, 1, 'a status write does not bump the generation');
    assert.equal((await res.getRequest('req-status'))?.status?.progress, '1/1');
  });

  void it('creates, gets, lists (by label, across pages) and deletes runs', async () => {
    for (const [name, node, req] of [
      ['run-a1', 'a1', 'alpha'],
      ['run-a2', 'a2', 'alpha'],
      ['run-a3', 'a3', 'alpha'],
      ['run-b1', 'b1', 'beta'],
    ] as const) {
      const created = await res.createRun(newRun(name, node, req));
      assert.equal(created.metadata.name, name);
      assert.ok(created.metadata.uid);
    }
    await assert.rejects(res.createRun(newRun('run-a1', 'a1')), (err) => isConflict(err));
    assert.equal((await res.getRun('run-a2'))?.spec.nodeName, 'a2');
    assert.equal(await res.getRun('run-zz'), undefined);
    const alpha = await res.listRuns(`${LABEL_REQUEST_NAME}=alpha`);
    assert.deepEqual(
      alpha.map((r) => r.metadata.name).sort(),
      ['run-a1', 'run-a2', 'run-a3'],
      'pages of 2 joined',
    );
    assert.equal((await res.listRuns()).length >= 4, true);
    await res.deleteRun('run-b1');
    await res.deleteRun('run-b1'); // already gone: fine
    assert.equal(await res.getRun('run-b1'), undefined);
  });

  void it('updates run status only from the current resourceVersion (409 otherwise)', async () => {
    const run = await res.createRun(newRun('run-claim', 'c1'));
    const claimed = await res.updateRunStatus({
      ...run,
      status: { phase: 'Running', attempt: 1, claimedBy: 'agent-1' },
    });
    assert.equal(claimed.status?.claimedBy, 'agent-1');
    assert.notEqual(claimed.metadata.resourceVersion, run.metadata.resourceVersion);
    // A second agent working from the stale read loses.
    await assert.rejects(
      res.updateRunStatus({ ...run, status: { phase: 'Running', attempt: 1, claimedBy: 'agent-2' } }),
      (err) => isConflict(err),
    );
    const { resourceVersion: _rv, ...noRv } = run.metadata;
    await assert.rejects(res.updateRunStatus({ ...run, metadata: noRv }), /resourceVersion/);
    assert.equal((await res.getRun('run-claim'))?.status?.claimedBy, 'agent-1');
  });

  void it('merge-patches run spec; the apiserver still enforces immutability', async () => {
    const run = await res.createRun(newRun('run-spec', 's1'));
    const patched = await res.patchRunSpec('run-spec', { bootID: 'boot-2' });
    assert.equal(patched.spec.bootID, 'boot-2');
    assert.equal(patched.spec.module, 'dummy', 'other fields kept');
    assert.equal(patched.metadata.generation, (run.metadata.generation ?? 0) + 1);
    await assert.rejects(
      res.patchRunSpec('run-spec', { nodeName: 'elsewhere' }),
      (err) => statusCode(err) === 422,
    );
  });

  void it('retryOnConflict re-runs a read-modify-write that lost a race', async () => {
    await res.createRun(newRun('run-race', 'r1'));
    let calls = 0;
    const result = await retryOnConflict(async () => {
      calls++;
      const current = (await res.getRun('run-race')) as ModuleRun;
      if (calls === 1) {
        // Someone else writes between our read and our write.
        await res.updateRunStatus({ ...current, status: { phase: 'Pending', message: 'other writer' } });
      }
      return res.updateRunStatus({ ...current, status: { phase: 'Running', attempt: calls } });
    });
    assert.equal(calls, 2);
    assert.equal(result.status?.attempt, 2);
  });

  void it('retryOnConflict gives up after the given attempts and does not retry other errors', async () => {
    let calls = 0;
    const conflict = Object.assign(new Error('conflict'), { code: 409 });
    await assert.rejects(
      retryOnConflict(() => {
        calls++;
        return Promise.reject(conflict);
      }, 3),
      /conflict/,
    );
    assert.equal(calls, 3);
    calls = 0;
    await assert.rejects(
      retryOnConflict(() => {
        calls++;
        return Promise.reject(Object.assign(new Error('forbidden'), { code: 403 }));
      }),
      /forbidden/,
    );
    assert.equal(calls, 1);
  });
});
