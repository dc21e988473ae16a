import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRequest, NodeResult } from '../api/types.ts';
import { MAX_LISTED_NODES, summarize } from './status.ts';

const req: ModuleRequest = {
  metadata: { name: 'r', generation: 2 },
  spec: { module: 'fs-ext4', nodeSelector: {} },
};
/** A node's result as results.ts reports it; no result yet: Pending (Dispatching). */
const run = (node: string, result?: Omit<NodeResult, 'nodeName'>): NodeResult =>
  result ? { nodeName: node, ...result } : { nodeName: node, phase: 'Pending', reason: 'Dispatching' };
const ok = { phase: 'Succeeded' as const, reason: 'Completed', exitCode: 0 };
const bad = { phase: 'Failed' as const, reason: 'ExitCode', exitCode: 1, message: 'exited 1' };

test('all succeeded: Succeeded=True, Failed=False, progress and exit code of the one node', () => {
  const s = summarize(req, [run('a', ok)], [], 'node/a', '2026-01-01T00:00:00Z');
  assert.equal(s.phase, 'Succeeded');
  assert.equal(s.progress, '1/1');
  assert.equal(s.exitCode, 0);
  assert.equal(s.observedGeneration, 2);
  assert.deepEqual(
    s.conditions?.map((c) => [c.type, c.status, c.observedGeneration]),
    [
      ['Succeeded', 'True', 2],
      ['Failed', 'False', 2],
      ['Ready', 'True', 2],
      ['Reconciling', 'False', 2],
      ['Stalled', 'False', 2],
    ],
  );
});

test('one failure makes the request Failed with the node and reason in the condition', () => {
  const s = summarize(req, [run('a', ok), run('b', bad), run('c')], [], 'all');
  assert.equal(s.phase, 'Failed');
  assert.deepEqual(s.counts, { total: 3, pending: 1, running: 0, succeeded: 1, failed: 1 });
  const failed = s.conditions?.find((c) => c.type === 'Failed');
  assert.equal(failed?.status, 'True');
  assert.equal(failed?.reason, 'ExitCode');
  assert.match(failed?.message ?? '', /1 of 3 node\(s\) failed; b: exited 1/);
  assert.equal(s.exitCode, undefined, 'no single exit code for several nodes');
  assert.equal(s.nodes?.[0]?.nodeName, 'b', 'failures are listed first');
});

test('a missing node is a failure with its reason', () => {
  const s = summarize(
    req,
    [],
    [{ nodeName: 'ghost', reason: 'NodeNotFound', message: 'node ghost does not exist' }],
    'node/ghost',
  );
  assert.equal(s.phase, 'Failed');
  assert.equal(s.conditions?.find((c) => c.type === 'Failed')?.reason, 'NodeNotFound');
});

test('a full node is a wait, not a failure: Pending and Reconciling, the reason on the node', () => {
  const full = { nodeName: 'n2', phase: 'Pending' as const, reason: 'NodeFull', message: 'not placed' };
  const s = summarize(req, [run('n1', ok)], [full], 'role=gpu');
  assert.equal(s.phase, 'Pending');
  assert.deepEqual(s.counts, { total: 2, pending: 1, running: 0, succeeded: 1, failed: 0 });
  assert.equal(s.conditions?.find((c) => c.type === 'Failed')?.status, 'False');
  assert.equal(s.conditions?.find((c) => c.type === 'Reconciling')?.status, 'True');
  assert.deepEqual(
    s.nodes?.map((n) => [n.nodeName, n.phase, n.reason]),
    [
      ['n2', 'Pending', 'NodeFull'],
      ['n1', 'Succeeded', 'Completed'],
    ],
  );
});

test('no matching node: pending, with a reason saying so', () => {
  const s = summarize(req, [], [], 'role=gpu');
  assert.equal(s.phase, 'Pending');
  assert.equal(s.conditions?.find((c) => c.type === 'Succeeded')?.reason, 'NoMatchingNodes');
});

test('lastTransitionTime moves only when a condition flips', () => {
  const first = summarize(req, [run('a')], [], 'x', '2026-01-01T00:00:00Z');
  const again = summarize({ ...req, status: first }, [run('a')], [], 'x', '2026-01-02T00:00:00Z');
  assert.equal(again.conditions?.[0]?.lastTransitionTime, '2026-01-01T00:00:00Z');
  const flipped = summarize({ ...req, status: first }, [run('a', ok)], [], 'x', '2026-01-03T00:00:00Z');
  assert.equal(flipped.conditions?.[0]?.lastTransitionTime, '2026-01-03T00:00:00Z');
});

test('the node list stays bounded at 5,000 nodes: succeeded nodes are counted, not listed', () => {
  const runs = Array.from({ length: 5000 }, (_, i) =>
    run(`n${i}`, i % 1000 === 0 ? bad : i % 7 === 0 ? undefined : ok),
  );
  const s = summarize(req, runs, [], 'all');
  assert.equal(s.counts?.total, 5000);
  assert.ok((s.nodes?.length ?? 0) <= MAX_LISTED_NODES);
  assert.ok(s.nodes?.every((n) => n.phase !== 'Succeeded'));
  assert.equal(s.nodes?.[0]?.phase, 'Failed');
  assert.equal((s.nodes?.length ?? 0) + (s.nodesOmitted ?? 0), 5000);
  assert.ok(JSON.stringify(s).length < 64 * 1024, `status is ${JSON.stringify(s).length} bytes`);
});

/** The kstatus-facing trio of a status, as [type, status, reason]. */
const trio = (s: ReturnType<typeof summarize>) =>
  ['Ready', 'Reconciling', 'Stalled'].map((t) => {
    const c = s.conditions?.find((x) => x.type === t);
    return [t, c?.status, c?.reason];
  });

test('runs outstanding: Reconciling=True (kstatus InProgress), not Ready, not Stalled', () => {
  const running = { phase: 'Running' as const, reason: 'Running' };
  const s = summarize(req, [run('a', ok), run('b', running), run('c')], [], 'all');
  assert.equal(s.phase, 'Running');
  assert.deepEqual(trio(s), [
    ['Ready', 'False', 'Running'],
    ['Reconciling', 'True', 'Running'],
    ['Stalled', 'False', 'NoFailures'],
  ]);
  assert.equal(
    s.conditions?.find((c) => c.type === 'Reconciling')?.message,
    '2 of 3 node(s) outstanding: 1 running, 1 pending',
  );
  const pending = summarize(req, [run('a')], [], 'node/a');
  assert.deepEqual(trio(pending)[1], ['Reconciling', 'True', 'Pending']);
});

test('a failure: Stalled=True naming the node, and not Reconciling even while other nodes still run', () => {
  const s = summarize(req, [run('a'), run('b', bad)], [], 'all');
  assert.equal(s.phase, 'Failed');
  assert.deepEqual(trio(s), [
    ['Ready', 'False', 'NodeFailed'],
    ['Reconciling', 'False', 'Settled'],
    ['Stalled', 'True', 'ExitCode'],
  ]);
  const stalled = s.conditions?.find((c) => c.type === 'Stalled');
  assert.equal(stalled?.message, '1 of 2 node(s) failed; b: exited 1');
  assert.equal(stalled?.observedGeneration, 2);
  assert.match(
    s.conditions?.find((c) => c.type === 'Reconciling')?.message ?? '',
    /1 run\(s\) still outstanding/,
  );
});

test('no matching node: Reconciling=True with NoMatchingNodes (the request waits for a node to join)', () => {
  const s = summarize(req, [], [], 'role=gpu');
  assert.deepEqual(trio(s)[1], ['Reconciling', 'True', 'NoMatchingNodes']);
  assert.equal(trio(s)[0]?.[1], 'False');
});

test('every condition carries the generation it was computed for', () => {
  for (const runs of [[run('a')], [run('a', ok)], [run('a', bad)]]) {
    const s = summarize(req, runs, [], 'node/a');
    assert.deepEqual(
      s.conditions?.map((c) => c.observedGeneration),
      [2, 2, 2, 2, 2],
    );
    assert.equal(s.observedGeneration, 2);
  }
});
