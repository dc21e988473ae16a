import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { KubernetesObject } from '@kubernetes/client-node';
import { annotationChanged, generationChanged, labelsChanged } from './predicates.ts';

const obj = (metadata: KubernetesObject['metadata']): KubernetesObject => ({ metadata });

test('generationChanged: spec changes move it, status writes and resyncs do not', () => {
  assert.equal(generationChanged(obj({ generation: 2 }), obj({ generation: 1 })), true);
  assert.equal(generationChanged(obj({ generation: 2 }), obj({ generation: 2 })), false);
  assert.equal(generationChanged(obj({ generation: 1 }), undefined), true, 'no old object: treat as changed');
});

test('annotationChanged looks at one key only', () => {
  const a = obj({ annotations: { x: '1', other: 'a' } });
  assert.equal(annotationChanged('x', a, obj({ annotations: { x: '1', other: 'b' } })), false);
  assert.equal(annotationChanged('x', a, obj({ annotations: { x: '2' } })), true);
  assert.equal(annotationChanged('x', a, obj({})), true, 'appeared');
  assert.equal(annotationChanged('x', obj({}), a), true, 'went away');
  assert.equal(annotationChanged('x', obj({}), obj({ annotations: {} })), false);
});

test('labelsChanged: added, removed or changed labels; order and heartbeats do not count', () => {
  const a = obj({ labels: { a: '1', b: '2' }, resourceVersion: '5' });
  assert.equal(labelsChanged(a, obj({ labels: { b: '2', a: '1' }, resourceVersion: '4' })), false);
  assert.equal(labelsChanged(a, obj({ labels: { a: '1' } })), true);
  assert.equal(labelsChanged(obj({ labels: { a: '1' } }), a), true);
  assert.equal(labelsChanged(a, obj({ labels: { a: '1', b: '3' } })), true);
  assert.equal(labelsChanged(obj({}), obj({ labels: {} })), false);
});
