import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Node } from '@kubernetes/client-node';
import type { ModuleRequest } from '../api/types.ts';
import { describeTarget, CONTROL_PLANE_LABEL, resolveTargets, targetsNode } from './targets.ts';

const node = (name: string, labels: Record<string, string> = {}, bootID = 'boot-1'): V1Node => ({
  metadata: { name, labels },
  status: { nodeInfo: { bootID } as never },
});
const nodes = [node('a', { role: 'gpu' }), node('b', { role: 'gpu', zone: 'z1' }), node('c')];
const req = (spec: Partial<ModuleRequest['spec']>, generation = 1): ModuleRequest => ({
  metadata: { name: 'req', uid: 'uid-1', generation },
  spec: { module: 'nvidia_uvm', ...spec },
});

test('nodeName targets that node, or reports it missing', () => {
  assert.deepEqual(
    resolveTargets(req({ nodeName: 'b' }), nodes).nodes.map((n) => n.metadata?.name),
    ['b'],
  );
  assert.deepEqual(resolveTargets(req({ nodeName: 'zz' }), nodes), { nodes: [], missing: 'zz' });
});

test('nodeSelector targets every matching node; an empty selector targets all', () => {
  assert.deepEqual(
    resolveTargets(req({ nodeSelector: { role: 'gpu' } }), nodes).nodes.map((n) => n.metadata?.name),
    ['a', 'b'],
  );
  assert.deepEqual(
    resolveTargets(req({ nodeSelector: { role: 'gpu', zone: 'z1' } }), nodes).nodes.map(
      (n) => n.metadata?.name,
    ),
    ['b'],
  );
  assert.equal(resolveTargets(req({ nodeSelector: {} }), nodes).nodes.length, 3);
  assert.equal(describeTarget(req({ nodeSelector: {} })), '<all nodes>');
  assert.equal(describeTarget(req({ nodeSelector: { role: 'gpu' } })), 'role=gpu');
});

test('excluded labels keep nodes out of selector targets, not out of nodeName or a selector naming them', () => {
  const cluster = [
    node('cp-1', { [CONTROL_PLANE_LABEL]: '' }),
    node('cp-gpu', { [CONTROL_PLANE_LABEL]: 'true', role: 'gpu' }),
    node('w-gpu', { role: 'gpu' }),
    node('w-plain'),
  ];
  const names = (r: { nodes: V1Node[] }) => r.nodes.map((n) => n.metadata?.name);
  const opts = { excludeNodesWithLabels: [CONTROL_PLANE_LABEL] };
  // Without the option, {} is every node, control plane included (what the README warns about).
  assert.deepEqual(names(resolveTargets(req({ nodeSelector: {} }), cluster)), [
    'cp-1',
    'cp-gpu',
    'w-gpu',
    'w-plain',
  ]);
  // With it: whatever the label's value, a control-plane node is out of {} and of other selectors.
  assert.deepEqual(names(resolveTargets(req({ nodeSelector: {} }), cluster, opts)), ['w-gpu', 'w-plain']);
  assert.deepEqual(names(resolveTargets(req({ nodeSelector: { role: 'gpu' } }), cluster, opts)), ['w-gpu']);
  // A selector that asks for the control plane by its label gets it.
  assert.deepEqual(
    names(resolveTargets(req({ nodeSelector: { [CONTROL_PLANE_LABEL]: '' } }), cluster, opts)),
    ['cp-1'],
  );
  // Naming a node is explicit.
  assert.deepEqual(names(resolveTargets(req({ nodeName: 'cp-1' }), cluster, opts)), ['cp-1']);
  // Several keys; a node without labels is never excluded.
  const two = { excludeNodesWithLabels: [CONTROL_PLANE_LABEL, 'role'] };
  assert.deepEqual(names(resolveTargets(req({ nodeSelector: {} }), cluster, two)), ['w-plain']);
  assert.deepEqual(names(resolveTargets(req({}), [{ metadata: { name: 'bare' } }], two)), ['bare']);
});

test('targetsNode: which requests a node event concerns (nodeName, selector, exclusions)', () => {
  const cp = node('cp', { [CONTROL_PLANE_LABEL]: '' });
  const opts = { excludeNodesWithLabels: [CONTROL_PLANE_LABEL] };
  assert.equal(targetsNode(req({ nodeName: 'a' }), node('a')), true);
  assert.equal(targetsNode(req({ nodeName: 'a' }), node('b')), false);
  // A nodeName target is never excluded, and a node that does not exist yet is matched by name.
  assert.equal(targetsNode(req({ nodeName: 'cp' }), cp, opts), true);
  assert.equal(targetsNode(req({ nodeSelector: { role: 'gpu' } }), node('a', { role: 'gpu' })), true);
  assert.equal(targetsNode(req({ nodeSelector: { role: 'gpu' } }), node('c')), false);
  assert.equal(targetsNode(req({ nodeSelector: {} }), node('c'), opts), true);
  assert.equal(
    targetsNode(req({ nodeSelector: {} }), cp, opts),
    false,
    'the control plane is left out of {}',
  );
  assert.equal(targetsNode(req({ nodeSelector: { [CONTROL_PLANE_LABEL]: '' } }), cp, opts), true);
  assert.equal(targetsNode({ metadata: { name: 'bad' } } as ModuleRequest, node('a')), false, 'no spec');
});
