import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { demoResolver, prepareDemoHelper } from '../local/demo.ts';
import { NodeResolver } from './noderesolver.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-noderesolver-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));
prepareDemoHelper(join(dir, 'demo'));
const conf = join(dir, 'modprobe.d');
mkdirSync(conf);
writeFileSync(join(conf, 'alias.conf'), 'alias my-alias demo_net\n');
const base = demoResolver(join(dir, 'demo'));
const args = [...base.args, '-C', conf];

test('the configuration is read once per change; resolutions are remembered until a file changes', async () => {
  const r = new NodeResolver({ modprobe: base.modprobe, args });
  const first = await r.resolve('my-alias', 'high');
  assert.ok(first.ok, JSON.stringify(first));
  assert.deepEqual(
    first.modules.map((m) => m.name),
    ['demo_core', 'demo_net'],
  );
  await Promise.all(Array.from({ length: 20 }, () => r.resolve('my-alias', 'low')));
  assert.deepEqual(r.stats, { configReads: 1, resolutions: 1, cacheHits: 20 });
  // An admin blacklists demo_net: the next resolution sees it, with no restart.
  writeFileSync(join(conf, 'bl.conf'), 'blacklist demo_net\n');
  const after = await r.resolve('my-alias', 'high');
  assert.ok(after.ok);
  assert.equal(after.blacklist.has('demo_net'), true);
  assert.deepEqual(r.stats, { configReads: 2, resolutions: 2, cacheHits: 20 });
  rmSync(join(conf, 'bl.conf'));
  // A failure is not remembered.
  await r.resolve('no_such_module', 'high');
  await r.resolve('no_such_module', 'high');
  assert.equal(r.stats.resolutions, 4);
});

test('at most `concurrency` modprobe processes run at once, however many resolutions are asked', async () => {
  // A modprobe that records its lifetime and answers like the real one, slowly.
  const record = join(dir, 'record');
  mkdirSync(record);
  const slow = join(dir, 'slow-modprobe');
  writeFileSync(
    slow,
    `#!/bin/sh
echo "start $(date +%s%N)" > ${record}/$$
sleep 0.05
${base.modprobe} "$@"; rc=$?
echo "end $(date +%s%N)" >> ${record}/$$
exit $rc
`,
  );
  chmodSync(slow, 0o755);
  const r = new NodeResolver({ modprobe: slow, args }, { concurrency: 2, cacheSize: 0 });
  const all = await Promise.all(Array.from({ length: 12 }, () => r.resolve('demo_net', 'low')));
  assert.ok(all.every((x) => x.ok));
  const spans = readdirSync(record).map((f) => {
    const [start, end] = readFileSync(join(record, f), 'utf8')
      .trim()
      .split('\n')
      .map((l) => Number(l.split(' ')[1]));
    return { start: start ?? 0, end: end ?? 0 };
  });
  // One -c, then two questions per resolution.
  assert.equal(spans.length, 1 + 2 * 12);
  const peak = Math.max(
    ...spans.map((s) => spans.filter((o) => o.start <= s.start && o.end > s.start).length),
  );
  assert.ok(peak <= 4, `${peak} modprobe processes at once (2 resolutions × 2 questions allowed)`);
});
