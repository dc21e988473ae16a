import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRequest, NodeModules, NodeModulesResult } from '../api/types.ts';
import { finishedResult, resultOn } from './results.ts';

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
