import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeModules, NodeModulesResult, RunPhase } from '../api/types.ts';
import { PROGRESS_BATCH_MIN_NODES, ProgressIndex } from './progress.ts';

const obj = (
  node: string,
  results: Record<string, RunPhase | undefined>,
  requests = Object.keys(results),
): NodeModules => ({
  metadata: { name: node },
  spec: {
    bootID: 'b',
    requests: requests.map((r) => ({
      name: r,
      uid: `${r}-uid`,
      generation: 1,
      module: 'm',
      wait: 'Process',
      timeoutSeconds: 60,
    })),
  },
  status: {
    results: Object.entries(results)
      .filter(([, p]) => p)
      .map(([r, phase]): NodeModulesResult => ({
        name: r,
        uid: `${r}-uid`,
        observedGeneration: 1,
        phase,
        bootID: 'b',
      })),
  },
});

test('our own spec writes coming back call for nothing; a result calls for its request', () => {
  const p = new ProgressIndex();
  assert.deepEqual(p.update('n1', undefined, obj('n1', { r: undefined })), [], 'dispatch echo');
  assert.deepEqual(p.counts('r'), { nodes: 1, finished: 0 });
  assert.deepEqual(p.update('n1', obj('n1', { r: undefined }), obj('n1', { r: 'Running' })), [
    { request: 'r', urgency: 'now' },
  ]);
  assert.deepEqual(p.update('n1', obj('n1', { r: 'Running' }), obj('n1', { r: 'Succeeded' })), [
    { request: 'r', urgency: 'now' },
  ]);
  assert.deepEqual(p.counts('r'), { nodes: 1, finished: 1 });
});

test('a large request’s progress waits for the pacing interval; its last result does not', () => {
  const p = new ProgressIndex();
  const n = PROGRESS_BATCH_MIN_NODES + 1;
  for (let i = 0; i < n; i++) p.update(`n${i}`, undefined, obj(`n${i}`, { big: undefined }));
  const urgencies: string[] = [];
  for (let i = 0; i < n; i++) {
    const [ev] = p.update(`n${i}`, obj(`n${i}`, { big: undefined }), obj(`n${i}`, { big: 'Succeeded' }));
    urgencies.push(ev?.urgency ?? 'none');
  }
  assert.deepEqual(urgencies.slice(0, -1), Array(n - 1).fill('progress'));
  assert.equal(urgencies.at(-1), 'now', 'the result that finishes the last outstanding node');
});

test('an entry taken off a node is forgotten; the whole object deleted calls for its requests now', () => {
  const p = new ProgressIndex();
  p.update('n1', undefined, obj('n1', { a: 'Succeeded', b: undefined }));
  assert.deepEqual(
    p.update('n1', obj('n1', { a: 'Succeeded', b: undefined }), obj('n1', { a: 'Succeeded' })),
    [],
  );
  assert.deepEqual(p.counts('b'), { nodes: 0, finished: 0 });
  assert.deepEqual(p.update('n1', obj('n1', { a: 'Succeeded' }), undefined), [
    { request: 'a', urgency: 'now' },
  ]);
  assert.deepEqual(p.counts('a'), { nodes: 0, finished: 0 });
});
