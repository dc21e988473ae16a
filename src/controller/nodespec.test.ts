import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Node } from '@kubernetes/client-node';
import type { ModuleRequest, NodeModulesRequest } from '../api/types.ts';
import type { Assigned } from './assignments.ts';
import { sameEntry } from '../api/nodemodules.ts';
import { desiredEntry, newNodeModules, placeRequests, specDiffers } from './nodespec.ts';

const req = (spec: Partial<ModuleRequest['spec']>, generation = 1): ModuleRequest => ({
  metadata: { name: 'req', uid: 'uid-1', generation },
  spec: { module: 'nvidia_uvm', nodeSelector: {}, ...spec },
});
const entry = (i: number, over: Partial<NodeModulesRequest> = {}): NodeModulesRequest => ({
  name: `r${i}`,
  uid: `u${i}`,
  generation: 1,
  module: `m${i}`,
  wait: 'Process',
  timeoutSeconds: 60,
  ...over,
});
const assigned = (i: number, over: Partial<NodeModulesRequest> = {}): Assigned => ({
  request: `r${i}`,
  created: `2026-01-01T00:00:${String(i).padStart(2, '0')}.000Z`,
  entry: entry(i, over),
});

test('a request’s entry carries what to run, its UID and generation; defaults filled in', () => {
  assert.deepEqual(desiredEntry(req({ parameters: ['a=1'], dryRun: true }, 3)), {
    name: 'req',
    uid: 'uid-1',
    generation: 3,
    module: 'nvidia_uvm',
    wait: 'Process',
    timeoutSeconds: 60,
    parameters: ['a=1'],
    dryRun: true,
  });
  assert.deepEqual(Object.keys(desiredEntry(req({ parameters: [] }))).includes('parameters'), false);
});

test('entries compare field by field: spec, generation, action; not key order', () => {
  const e = entry(1);
  assert.equal(sameEntry(e, { ...e }), true);
  const reordered = Object.fromEntries(Object.entries(e).reverse()) as unknown as NodeModulesRequest;
  assert.equal(sameEntry(e, reordered), true);
  assert.equal(sameEntry(e, { ...e, generation: 2 }), false);
  assert.equal(sameEntry(e, { ...e, parameters: ['x=1'] }), false);
  assert.equal(sameEntry(e, { ...e, action: 'Remove' }), false);
  assert.equal(sameEntry(e, { ...e, action: 'Load' }), true, 'Load is the default');
});

test('placement: oldest first within the count limit; the rest wait (Pending, NodeFull) naming the limit', () => {
  const all = [1, 2, 3, 4].map((i) => assigned(i));
  const p = placeRequests('n1', all, undefined, { maxRequests: 3, specBudgetBytes: 1 << 20 });
  assert.deepEqual(
    p.requests.map((e) => e.name),
    ['r1', 'r2', 'r3'],
  );
  assert.deepEqual(
    p.full.map((f) => [f.assigned.request, f.outcome.phase, f.outcome.reason, f.outcome.nodeName]),
    [['r4', 'Pending', 'NodeFull', 'n1']],
  );
  assert.match(p.full[0]?.outcome.message ?? '', /node n1: it holds 3 requests, the most one node takes/);
});

test('placement is sticky: a newer request never pushes out one already on the node', () => {
  // r4 is on the node; r1..r3 (older) arrive later, with room for three.
  const all = [1, 2, 3, 4].map((i) => assigned(i));
  const p = placeRequests('n1', all, [entry(4)], { maxRequests: 3, specBudgetBytes: 1 << 20 });
  assert.deepEqual(
    p.requests.map((e) => e.name),
    ['r1', 'r2', 'r4'],
    'kept r4, filled the rest oldest first, listed oldest first',
  );
  assert.deepEqual(
    p.full.map((f) => f.assigned.request),
    ['r3'],
  );
});

test('placement: the spec budget in bytes counts too (parameters are the large part)', () => {
  const big = ['p=' + 'x'.repeat(1000)];
  const all = [1, 2, 3].map((i) => assigned(i, { parameters: big }));
  const p = placeRequests('n1', all, undefined, { maxRequests: 256, specBudgetBytes: 2500 });
  assert.deepEqual(
    p.requests.map((e) => e.name),
    ['r1', 'r2'],
  );
  assert.match(p.full[0]?.outcome.message ?? '', /would take more than 2500 bytes/);
  assert.ok(JSON.stringify(p.requests).length <= 2500);
});

test('specDiffers: boot ID, entries added, removed, changed or reordered', () => {
  const spec = { bootID: 'b1', requests: [entry(1), entry(2)] };
  assert.equal(specDiffers(spec, { bootID: 'b1', requests: [entry(1), entry(2)] }), false);
  assert.equal(specDiffers(spec, { bootID: 'b2', requests: [entry(1), entry(2)] }), true);
  assert.equal(specDiffers(spec, { bootID: 'b1', requests: [entry(1)] }), true);
  assert.equal(specDiffers(spec, { bootID: 'b1', requests: [entry(2), entry(1)] }), true);
  assert.equal(specDiffers(spec, { bootID: 'b1', requests: [entry(1), entry(2, { generation: 2 })] }), true);
  assert.equal(specDiffers(undefined, { bootID: '', requests: [] }), false);
});

test('a new NodeModules is named after its node and owned by it (not controlled, no blockOwnerDeletion)', () => {
  const node: V1Node = { metadata: { name: 'n1', uid: 'node-uid' } };
  const nm = newNodeModules(node, { bootID: 'b', requests: [entry(1)] });
  assert.equal(nm.metadata.name, 'n1');
  assert.deepEqual(nm.metadata.ownerReferences, [
    { apiVersion: 'v1', kind: 'Node', name: 'n1', uid: 'node-uid' },
  ]);
  assert.equal(nm.kind, 'NodeModules');
});

test('placement: a waiting load or removal goes before waiting dry runs, older or not; placed dry runs stay', () => {
  // r1 (a dry run) is on the node; r2, r3 are older dry runs waiting; r4 a load, r5 a removal.
  const all = [
    assigned(1, { dryRun: true }),
    assigned(2, { dryRun: true }),
    assigned(3, { dryRun: true }),
    assigned(4),
    assigned(5, { action: 'Remove' }),
  ];
  const p = placeRequests('n1', all, [entry(1, { dryRun: true })], {
    maxRequests: 3,
    specBudgetBytes: 1 << 20,
  });
  assert.deepEqual(
    p.requests.map((e) => e.name),
    ['r1', 'r4', 'r5'],
    'oldest first within the object',
  );
  assert.deepEqual(
    p.full.map((f) => f.assigned.request),
    ['r2', 'r3'],
  );
});
