import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseProcModules, readModule, readModules, verifyLoad, verifyRemoval } from './sysfs.ts';

const root = mkdtempSync(join(tmpdir(), 'kmod-sysfs-test-'));
test.after(() => rmSync(root, { recursive: true, force: true }));
const roots = { sys: join(root, 'sys'), proc: join(root, 'proc') };

/** A module directory as the kernel lays it out. */
function sysModule(name: string, files: Record<string, string>, holders: string[] = []): void {
  const dir = join(roots.sys, 'module', name);
  mkdirSync(join(dir, 'holders'), { recursive: true });
  for (const [f, v] of Object.entries(files)) writeFileSync(join(dir, f), v);
  for (const h of holders) writeFileSync(join(dir, 'holders', h), '');
}
sysModule('xfs', { initstate: 'live\n', refcnt: '0\n' });
sysModule('libcrc32c', { initstate: 'live\n', refcnt: '1\n' }, ['xfs']);
sysModule('dummy', { initstate: 'going\n', refcnt: '0\n' });
mkdirSync(join(roots.sys, 'module', 'printk', 'parameters'), { recursive: true }); // built in, with parameters
sysModule('perm', { initstate: 'live\n', refcnt: '0\n' });
mkdirSync(roots.proc, { recursive: true });
writeFileSync(
  join(roots.proc, 'modules'),
  [
    'xfs 1634304 0 - Live 0x0000000000000000',
    'libcrc32c 16384 1 xfs, Live 0x0000000000000000',
    'perm 16384 0 [permanent], Live 0x0000000000000000',
    '',
  ].join('\n'),
);

test('a module reads as the kernel shows it: state, references, holders, permanent', () => {
  assert.deepEqual(readModule('libcrc32c', roots), {
    name: 'libcrc32c',
    state: 'live',
    refcnt: 1,
    holders: ['xfs'],
    permanent: false,
  });
  assert.equal(readModule('dummy', roots).state, 'going');
  assert.deepEqual(readModule('printk', roots), {
    name: 'printk',
    state: 'builtin',
    holders: [],
    permanent: false,
  });
  assert.equal(readModule('perm', roots).permanent, true);
  assert.deepEqual(readModule('no-such', roots), {
    name: 'no_such',
    state: 'absent',
    holders: [],
    permanent: false,
  });
  assert.deepEqual([...readModules(['xfs', 'xfs', 'lib-crc32c'], roots).keys()], ['xfs', 'lib_crc32c']);
});

test('/proc/modules used-by column: holders and [permanent]', () => {
  const m = parseProcModules('a 1 2 b,c, Live 0x0\nd 1 0 - Live 0x0\ne 1 0 [permanent], Live 0x0\n');
  assert.deepEqual(m.get('a'), { usedBy: ['b', 'c'], permanent: false });
  assert.deepEqual(m.get('d'), { usedBy: [], permanent: false });
  assert.deepEqual(m.get('e'), { usedBy: [], permanent: true });
});

test('verification: present after a load (built in counts), gone after a removal', () => {
  const after = readModules(['xfs', 'libcrc32c', 'crc32c', 'dummy'], roots);
  assert.deepEqual(
    verifyLoad(
      [
        { name: 'crc32c', how: 'builtin' },
        { name: 'libcrc32c', how: 'insmod' },
        { name: 'xfs', how: 'insmod' },
        { name: 'xfs', how: 'insmod' },
      ],
      after,
    ),
    { verified: ['crc32c', 'libcrc32c', 'xfs'], failed: [] },
  );
  assert.deepEqual(verifyLoad([{ name: 'dummy', how: 'install' }], after), {
    verified: [],
    failed: ['dummy'],
  });
  assert.deepEqual(verifyRemoval(['dummy', 'nothere'], readModules(['dummy', 'nothere'], roots)), {
    verified: ['nothere'],
    failed: ['dummy'],
  });
});
