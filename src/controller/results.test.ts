import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRequest, NodeModules, NodeModulesResult } from '../api/types.ts';
import { answeredDryRuns, finishedResult, resultOn } from './results.ts';

const req: ModuleRequest = {
  metadata: { name: 'r', uid: 'u1', generation: 2 },
  spec: { module: 'm', nodeSelector: {} },
};
const nm = (...results: NodeModulesResult[]): NodeModules => ({
  metadata: { name: 'n1' },
  spec: { bootID: 'b1' },
  status: { results },
});
const ok: NodeModulesResult = {
  name: 'r',
  uid: 'u1',
  observedGeneration: 2,
  phase: 'Succeeded',
  reason: 'Completed',
  exitCode: 0,
  bootID: 'b1',
  claimedBy: 'agent-x',
};

test('a node’s result counts for the request’s UID and current generation only', () => {
  const r = resultOn(req, 'n1', nm(ok), 'b1');
  assert.equal(r.phase, 'Succeeded');
  assert.equal(r.exitCode, 0);
  assert.equal(r.nodeName, 'n1');
  assert.equal(
    (r as unknown as Record<string, unknown>).claimedBy,
    undefined,
    'agent internals stay off the request',
  );
  assert.equal(resultOn(req, 'n1', nm({ ...ok, observedGeneration: 1 }), 'b1').phase, 'Pending');
  assert.equal(
    resultOn(req, 'n1', nm({ ...ok, uid: 'u0' }), 'b1').phase,
    'Pending',
    'an earlier incarnation',
  );
  assert.equal(resultOn(req, 'n1', undefined, 'b1').reason, 'Dispatching', 'no object yet');
  assert.equal(resultOn(req, 'n1', nm(), 'b1').message, 'waiting for the node agent');
});

test('a final result of an earlier boot is pending again: the module is gone after a reboot', () => {
  const r = resultOn(req, 'n1', nm(ok), 'b2');
  assert.equal(r.phase, 'Pending');
  assert.match(r.message ?? '', /node rebooted \(boot b2\)/);
  assert.equal(resultOn(req, 'n1', nm(ok), '').phase, 'Succeeded', 'boot unknown: as recorded');
  assert.equal(
    resultOn(req, 'n1', nm({ ...ok, phase: 'Running' }), 'b2').phase,
    'Running',
    'a claim stays a claim (the agent decides about it)',
  );
});

test('finishedResult: final, for the entry’s generation, on the boot given', () => {
  const e = { uid: 'u1', generation: 2 };
  assert.equal(finishedResult(e, ok, 'b1'), ok);
  assert.equal(finishedResult(e, { ...ok, phase: 'Running' }, 'b1'), undefined);
  assert.equal(finishedResult({ uid: 'u1', generation: 3 }, ok, 'b1'), undefined);
  assert.equal(finishedResult(e, ok, 'b9'), undefined);
  assert.equal(finishedResult(e, undefined, 'b1'), undefined);
});

test('a dry run is answered on the nodes its stored status holds an agent’s final answer for, at its generation', () => {
  const answer = { phase: 'Succeeded' as const, reason: 'DryRun', finishTime: '2026-12-05T10:00:00Z' };
  const dry: ModuleRequest = {
    metadata: { name: 'd', uid: 'u1', generation: 3 },
    spec: { module: 'm', nodeSelector: {}, dryRun: true },
    status: {
      observedGeneration: 3,
      nodes: [
        { nodeName: 'n1', ...answer },
        { nodeName: 'n2', phase: 'Failed', reason: 'Denied', finishTime: '2026-12-05T10:00:01Z' },
        { nodeName: 'n3', phase: 'Running', reason: 'Running' },
        { nodeName: 'n4', phase: 'Pending', reason: 'NodeFull' },
        { nodeName: 'n5', phase: 'Failed', reason: 'NodeNotFound', message: 'node n5 does not exist' },
      ],
    },
  };
  assert.deepEqual([...answeredDryRuns(dry).keys()], ['n1', 'n2'], 'final answers of an agent only');
  assert.equal(answeredDryRuns(dry).get('n1')?.reason, 'DryRun');
  assert.equal(
    answeredDryRuns({ ...dry, metadata: { ...dry.metadata, generation: 4 } }).size,
    0,
    'an edited request is asked again',
  );
  assert.equal(
    answeredDryRuns({ ...dry, spec: { module: 'm', nodeSelector: {} } }).size,
    0,
    'a load stays on its nodes (it runs again after a reboot)',
  );
  assert.equal(answeredDryRuns({ ...dry, status: undefined }).size, 0);
});
