import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { useControlPlane } from '../support/cluster.ts';
import {
  GROUP,
  REQUEST_PLURAL,
  VERSION,
  type ModuleRequest,
  type NodeModules,
  type NodeModulesRequest,
} from '../../src/api/types.ts';
import { isConflict, statusCode } from '../../src/kube/errors.ts';
import { Resources, retryOnConflict } from '../../src/kube/resources.ts';

const env = useControlPlane({ controllerManager: false });

void describe('Resources', () => {
  let res: Resources;

  before(() => {
    res = new Resources(env.kc);
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

  const nodeModules = (name: string): NodeModules => ({
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'NodeModules',
    metadata: { name },
    spec: { bootID: 'b1', requests: [entry('r1')] },
  });
  const entry = (name: string, generation = 1): NodeModulesRequest => ({
    name,
    uid: `${name}-uid`,
    generation,
    module: 'dummy',
    wait: 'Process',
    timeoutSeconds: 10,
  });

  void it('creates, gets and deletes a node’s NodeModules; a delete names the UID it means', async () => {
    const created = await res.createNodeModules(nodeModules('nm-a'));
    assert.ok(created.metadata.uid);
    await assert.rejects(res.createNodeModules(nodeModules('nm-a')), (err) => isConflict(err));
    assert.equal((await res.getNodeModules('nm-a'))?.spec.requests?.[0]?.name, 'r1');
    assert.equal(await res.getNodeModules('nm-zz'), undefined);
    await res.deleteNodeModules('nm-a', 'not-its-uid'); // another incarnation: left alone
    assert.ok(await res.getNodeModules('nm-a'));
    await res.deleteNodeModules('nm-a', created.metadata.uid ?? '');
    await res.deleteNodeModules('nm-a', created.metadata.uid ?? ''); // already gone: fine
    assert.equal(await res.getNodeModules('nm-a'), undefined);
  });

  void it('merge-patches the spec: requests replaced whole, the generation moves, status untouched', async () => {
    await res.createNodeModules(nodeModules('nm-spec'));
    await res.patchNodeModulesStatus('nm-spec', [{ op: 'add', path: '/status', value: { agent: 'a1' } }]);
    const patched = await res.patchNodeModulesSpec('nm-spec', { bootID: 'b2', requests: [entry('r2', 3)] });
    assert.deepEqual(
      patched.spec.requests?.map((e) => [e.name, e.generation]),
      [['r2', 3]],
    );
    assert.equal(patched.spec.bootID, 'b2');
    assert.equal(patched.metadata.generation, 2);
    assert.equal(patched.status?.agent, 'a1', 'a spec write leaves the status alone');
    const emptied = await res.patchNodeModulesSpec('nm-spec', { bootID: 'b2', requests: [] });
    assert.deepEqual(emptied.spec.requests, []);
  });

  void it('status: a JSON patch’s test on the last writer holds across spec writes and fails (422) after another writer', async () => {
    await res.createNodeModules(nodeModules('nm-status'));
    const write = (expected: string | null, agent: string) =>
      res.patchNodeModulesStatus('nm-status', [
        { op: 'test', path: expected === null ? '/status' : '/status/agent', value: expected },
        { op: 'add', path: '/status', value: { agent, lastFailure: `by ${agent}` } },
      ]);
    assert.equal((await write(null, 'a1')).status?.agent, 'a1', 'first write: no status yet');
    await res.patchNodeModulesSpec('nm-status', { bootID: 'b9', requests: [] }); // the controller writes
    const second = await write('a1', 'a1');
    assert.equal(second.status?.lastFailure, 'by a1', 'the spec write in between did not make it fail');
    assert.equal(second.spec.bootID, 'b9', 'nor did the status write touch the spec');
    await write('a1', 'a2'); // another agent process takes over
    await assert.rejects(write('a1', 'a1'), (err) => statusCode(err) === 422);
    await assert.rejects(write(null, 'a1'), (err) => statusCode(err) === 422, 'a status exists now');
    assert.equal((await res.getNodeModules('nm-status'))?.status?.agent, 'a2');
  });

  void it('retryOnConflict re-runs a read-modify-write that lost a race', async () => {
    const core = env.kc.makeApiClient(CoreV1Api);
    await core.createNamespacedConfigMap({
      namespace: 'default',
      body: { metadata: { name: 'race' }, data: {} },
    });
    let calls = 0;
    const result = await retryOnConflict(async () => {
      calls++;
      const current = await core.readNamespacedConfigMap({ namespace: 'default', name: 'race' });
      if (calls === 1) {
        // Someone else writes between our read and our write.
        await core.replaceNamespacedConfigMap({
          namespace: 'default',
          name: 'race',
          body: { ...current, data: { other: 'writer' } },
        });
      }
      return core.replaceNamespacedConfigMap({
        namespace: 'default',
        name: 'race',
        body: { ...current, data: { ...current.data, attempt: String(calls) } },
      });
    });
    assert.equal(calls, 2);
    assert.deepEqual(result.data, { other: 'writer', attempt: '2' });
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
