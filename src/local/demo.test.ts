import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDemoHelper, prepareDemoNode } from './demo.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-demo-test-'));
const node = prepareDemoNode(join(dir, 'demo'));
/** The helper as the agent runs it: the node's modprobe flags, then the request's arguments. */
const run = (...args: string[]) =>
  spawnSync(node.helper, [...node.modprobeArgs, ...args], { encoding: 'utf8' });
const sysModule = join(node.kernelRoots.sys, 'module');
const loaded = () => readdirSync(sysModule).sort();

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('the real modprobe resolves a demo module and its dependency, without loading anything', () => {
  const r = run('-v', '--', 'demo_net');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0] ?? '', /^insmod .*\/kernel\/drivers\/demo\/demo_core\.ko\s*$/);
  assert.match(lines[1] ?? '', /^insmod .*\/kernel\/drivers\/demo\/demo_net\.ko\s*$/);
  run('-r', '-q', '--', 'demo_net');
});

test('aliases resolve as on a node: net-pf-99, fs-demofs, a PCI modalias; parameters pass through', () => {
  assert.match(run('-v', '--', 'net-pf-99', 'debug=1').stdout, /demo_net\.ko debug=1/);
  assert.match(run('-v', '--', 'fs-demofs').stdout, /demo_fs\.ko/);
  assert.match(
    run('-v', '--', 'pci:v00008086d00001234sv00000000sd00000000bc02sc00i00').stdout,
    /demo_pci\.ko/,
  );
  for (const m of ['demo_net', 'demo_fs', 'demo_pci']) run('-r', '-q', '--', m);
  assert.deepEqual(loaded(), []);
});

test('an unknown module fails with exit 1, quietly under -q, as modprobe does', () => {
  const r = run('-q', '--', 'no_such_module');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, '');
  assert.match(run('--', 'no_such_module').stderr, /Module no_such_module not found/);
});

test('the simulated kernel: a load leaves modules live with their holders; removal refuses what is held', () => {
  assert.equal(run('-q', '--', 'net-pf-99').status, 0);
  assert.deepEqual(loaded(), ['demo_core', 'demo_net']);
  assert.equal(readFileSync(join(sysModule, 'demo_net/initstate'), 'utf8'), 'live\n');
  assert.deepEqual(readdirSync(join(sysModule, 'demo_core/holders')), ['demo_net']);
  // In use: kmod refuses, exit 1, nothing goes.
  assert.equal(run('-r', '-q', '--', 'demo_core').status, 1);
  assert.deepEqual(loaded(), ['demo_core', 'demo_net']);
  // The holder goes, and the dependency it left unused with it; removing again changes nothing.
  assert.equal(run('-r', '-q', '--', 'demo_net').status, 0);
  assert.deepEqual(loaded(), []);
  assert.equal(run('-r', '-q', '--', 'demo_net').status, 0);
});

test('a second call reuses the tree', () => {
  assert.equal(prepareDemoHelper(join(dir, 'demo')), node.helper);
  assert.equal(run('-q', '--', 'demo_core').stdout, '');
  run('-r', '-q', '--', 'demo_core');
});
