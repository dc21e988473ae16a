import { test } from 'node:test';
import assert from 'node:assert/strict';
import { complete, type CompletionSources } from './complete.ts';

const src: CompletionSources = {
  nodes: () =>
    Promise.resolve([
      { name: 'worker-1', labels: { role: 'gpu' } },
      { name: 'worker-2', labels: { role: 'cpu' } },
    ]),
  modules: () => Promise.resolve(['nvidia_uvm', 'fs-ext4', 'nvidia_uvm']),
  contexts: () => ['prod', 'dev'],
};

test('flags, node names, selectors, wait modes, formats, contexts and modules asked before', async () => {
  assert.equal(await complete(['--no'], src), '--node\n:4\n');
  assert.equal(await complete(['--node', 'worker-'], src), 'worker-1\nworker-2\n:4\n');
  assert.equal(await complete(['--node=worker-2'], src), '--node=worker-2\n:4\n');
  assert.equal(await complete(['-l', 'role=g'], src), 'role=gpu\n:4\n');
  assert.equal(await complete(['--wait', ''], src), 'exec\nnone\nprocess\n:4\n');
  assert.equal(await complete(['-o', ''], src), 'json\nyaml\n:4\n');
  assert.equal(await complete(['--context', 'p'], src), 'prod\n:4\n');
  assert.equal(await complete(['--kubeconfig', ''], src), ':0\n', 'file names: the shell completes them');
  assert.equal(await complete(['--node', 'worker-1', 'nv'], src), 'nvidia_uvm\n:4\n');
  assert.equal(
    await complete(['--node', 'worker-1', 'nvidia_uvm', ''], src),
    ':4\n',
    'parameters: nothing to offer',
  );
});

test('a cluster that cannot be reached yields no candidates, not an error', async () => {
  const broken: CompletionSources = { ...src, nodes: () => Promise.reject(new Error('connection refused')) };
  assert.equal(await complete(['--node', ''], broken), ':4\n');
});
