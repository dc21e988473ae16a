import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRun } from '../api/types.ts';
import { recordWrites, withWrites, type WrittenRuns } from './written.ts';

const run = (node: string, rv?: string, phase?: 'Running'): ModuleRun => ({
  metadata: { name: `r-${node}`, ...(rv ? { resourceVersion: rv } : {}) },
  spec: { nodeName: node, module: 'm', wait: 'Process', timeoutSeconds: 60 },
  ...(phase ? { status: { phase } } : {}),
});

test('a run we created stands in for the cache until the cache shows it, then the cache wins', () => {
  const written: WrittenRuns = new Map();
  const created = run('a', '10');
  recordWrites([], [created], written);
  assert.deepEqual(withWrites([], written), [created], 'the cache has not delivered the create yet');
  const seen = run('a', '11', 'Running');
  assert.deepEqual(withWrites([seen], written), [seen]);
  assert.equal(written.size, 0, 'dropped once seen');
});

test('a patched run stands in while the cache holds the version it replaced', () => {
  const cached = run('a', '5');
  const patched = run('a', '6');
  const written: WrittenRuns = new Map();
  recordWrites([cached], [patched], written);
  assert.deepEqual(withWrites([cached], written), [patched]);
  assert.deepEqual(withWrites([run('a', '6')], written), [run('a', '6')]);
  assert.equal(written.size, 0);
});

test('a run returned unchanged, or one whose write failed (no resourceVersion), is not recorded', () => {
  const cached = run('a', '5');
  const written: WrittenRuns = new Map();
  recordWrites([cached], [cached, run('b')], written);
  assert.equal(written.size, 0);
});

test('a run deleted from the cache after our write is not resurrected', () => {
  const written: WrittenRuns = new Map([['r-a', { run: run('a', '6'), over: '5' }]]);
  assert.deepEqual(withWrites([], written), []);
  assert.equal(written.size, 0);
});
