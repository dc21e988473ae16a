import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeModulesRequest } from '../api/types.ts';
import { Assignments } from './assignments.ts';

const entry = (uid: string, generation = 1): NodeModulesRequest => ({
  name: 'r',
  uid,
  generation,
  module: 'm',
  wait: 'Process',
  timeoutSeconds: 60,
});

test('assign returns the nodes whose entries changed; the same assignment again changes nothing', () => {
  const a = new Assignments();
  assert.deepEqual(a.assign('r', 't1', entry('u1'), ['n1', 'n2']).sort(), ['n1', 'n2']);
  assert.deepEqual(a.assign('r', 't1', entry('u1'), ['n1', 'n2']), []);
  assert.deepEqual(a.assign('r', 't1', entry('u1'), ['n2', 'n3']).sort(), ['n1', 'n3'], 'n1 left, n3 joined');
  assert.deepEqual(a.assign('r', 't1', entry('u1', 2), ['n2', 'n3']).sort(), ['n2', 'n3'], 'new generation');
  assert.deepEqual([...a.nodesOf('r')].sort(), ['n2', 'n3']);
  assert.deepEqual(a.of('n1'), []);
  assert.equal(a.of('n2')[0]?.entry.generation, 2);
});

test('a request recreated under the same name (new UID) replaces the old one on every node', () => {
  const a = new Assignments();
  a.assign('r', 't1', entry('u1'), ['n1', 'n2']);
  assert.deepEqual(a.assign('r', 't2', entry('u2'), ['n1']).sort(), ['n1', 'n2']);
  assert.deepEqual(
    a.of('n1').map((x) => x.entry.uid),
    ['u2'],
  );
  assert.deepEqual(a.of('n2'), []);
});

test('unassign takes a request off its nodes; a node lists its requests oldest first, then by name', () => {
  const a = new Assignments();
  a.assign('b', '2026-01-01T00:00:01.000Z', { ...entry('ub'), name: 'b' }, ['n1']);
  a.assign('c', '2026-01-01T00:00:00.000Z', { ...entry('uc'), name: 'c' }, ['n1']);
  a.assign('a', '2026-01-01T00:00:01.000Z', { ...entry('ua'), name: 'a' }, ['n1', 'n2']);
  assert.deepEqual(
    a.of('n1').map((x) => x.request),
    ['c', 'a', 'b'],
  );
  assert.deepEqual(a.unassign('a').sort(), ['n1', 'n2']);
  assert.deepEqual(a.unassign('a'), []);
  assert.deepEqual(
    a.of('n1').map((x) => x.request),
    ['c', 'b'],
  );
  assert.deepEqual(a.nodes(), ['n1']);
  a.assign('c', '2026-01-01T00:00:00.000Z', { ...entry('uc'), name: 'c' }, []);
  assert.deepEqual(a.nodesOf('c').size, 0, 'no nodes: nothing remembered');
});
