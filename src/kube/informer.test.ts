// The Informer itself is tested against the control plane (test/kube/informer*.test.ts); this is
// its default transform alone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stripManagedFields } from './informer.ts';

test('stripManagedFields removes metadata.managedFields only, and leaves objects without metadata alone', () => {
  const obj = {
    apiVersion: 'kmod.dev/v1alpha1',
    kind: 'ModuleRun',
    metadata: {
      name: 'r',
      resourceVersion: '7',
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
      managedFields: [{ manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:spec': {} } }],
    },
    spec: { nodeName: 'n' },
  };
  stripManagedFields(obj);
  assert.deepEqual(obj, {
    apiVersion: 'kmod.dev/v1alpha1',
    kind: 'ModuleRun',
    metadata: {
      name: 'r',
      resourceVersion: '7',
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
    },
    spec: { nodeName: 'n' },
  });
  assert.equal(Object.hasOwn(obj.metadata, 'managedFields'), false, 'deleted, not set to undefined');
  for (const odd of [null, undefined, {}, { metadata: null }, 'text']) {
    assert.doesNotThrow(() => stripManagedFields(odd));
  }
});
