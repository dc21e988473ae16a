import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareDemoHelper } from './demo.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-demo-test-'));
const helper = prepareDemoHelper(join(dir, 'demo'));
const run = (...args: string[]) => spawnSync(helper, args, { encoding: 'utf8' });

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('the real modprobe resolves a demo module and its dependency, without loading anything', () => {
  const r = run('-v', '--', 'demo_net');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.match(lines[0] ?? '', /^insmod .*\/kernel\/drivers\/demo\/demo_core\.ko\s*$/);
  assert.match(lines[1] ?? '', /^insmod .*\/kernel\/drivers\/demo\/demo_net\.ko\s*$/);
});

test('aliases resolve as on a node: net-pf-99, fs-demofs, a PCI modalias; parameters pass through', () => {
  assert.match(run('-v', '--', 'net-pf-99', 'debug=1').stdout, /demo_net\.ko debug=1/);
  assert.match(run('-v', '--', 'fs-demofs').stdout, /demo_fs\.ko/);
  assert.match(
    run('-v', '--', 'pci:v00008086d00001234sv00000000sd00000000bc02sc00i00').stdout,
    /demo_pci\.ko/,
  );
});

test('an unknown module fails with exit 1, quietly under -q, as modprobe does', () => {
  const r = run('-q', '--', 'no_such_module');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, '');
  assert.match(run('--', 'no_such_module').stderr, /Module no_such_module not found/);
});

test('a second call reuses the tree', () => {
  assert.equal(prepareDemoHelper(join(dir, 'demo')), helper);
  assert.equal(execFileSync(helper, ['-q', '--', 'demo_core']).length, 0);
});
