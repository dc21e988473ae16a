import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeModules } from '../api/types.ts';
import { ControllerMemory } from './memory.ts';

const nm = (rv: string, bootID = rv): NodeModules => ({
  metadata: { name: 'n1', resourceVersion: rv },
  spec: { bootID },
});

test('a node’s object as written stands in for the cache until the cache moves past it', () => {
  const m = new ControllerMemory();
  const created = nm('5');
  m.wroteNodeModules('n1', created, undefined);
  assert.equal(m.nodeModules('n1', undefined), created, 'created: the cache does not have it yet');
  assert.equal(
    m.nodeModules('n1', nm('5'))?.metadata.resourceVersion,
    '5',
    'the cache shows it: the cache wins',
  );
  assert.equal(m.nodeModules('n1', undefined), undefined, 'and the expectation is gone');

  m.wroteNodeModules('n1', nm('7'), nm('6'));
  m.wroteNodeModules('n1', nm('8'), nm('7'));
  assert.equal(
    m.nodeModules('n1', nm('6'))?.metadata.resourceVersion,
    '8',
    'the cache shows what our writes replaced',
  );
  assert.equal(m.nodeModules('n1', nm('7'))?.metadata.resourceVersion, '8', 'or our own earlier write');
  assert.equal(
    m.nodeModules('n1', nm('9'))?.metadata.resourceVersion,
    '9',
    'something newer: the cache wins',
  );
});

test('forget drops a request; forgetNode a node; clear everything', () => {
  const m = new ControllerMemory();
  m.request('r').refused.set('n1', { nodeName: 'n1', reason: 'NodeFull', message: 'full' });
  assert.equal(m.peek('r')?.refused.size, 1);
  m.forget('r');
  assert.equal(m.peek('r'), undefined);
  m.wroteNodeModules('n1', nm('1'), nm('0'));
  m.forgetNode('n1');
  assert.equal(m.nodeModules('n1', nm('0'))?.metadata.resourceVersion, '0');
  m.request('x');
  m.wroteNodeModules('n2', nm('1'), undefined);
  m.clear();
  assert.equal(m.peek('x'), undefined);
  assert.equal(m.nodeModules('n2', undefined), undefined);
});
