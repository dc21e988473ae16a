import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_KERNEL_LOG_BYTES, MAX_KERNEL_LOG_LINES } from '../api/types.ts';
import { KernelLog, boundLines, parseDmesg, quotedLine, sanitizeLine, selectLines } from './kmsg.ts';

const dir = mkdtempSync(join(tmpdir(), 'kmod-kmsg-test-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const LOG = [
  '[    0.000000] Linux version 6.1.0-9-amd64',
  '[  100.000001] loop: module loaded',
  '[  200.500000] loop: earlier run, before the mark',
  "[  300.100000] loop: 'abc' invalid for parameter 'max_loop'",
  '[  300.100100] loop0: detected capacity change from 0 to 8',
  '[  300.200000] Loading of unsigned module is rejected',
  '[  300.300000] dummy: loading out-of-tree module taints kernel.',
  '    a continuation line',
  '[  300.400000] xfs-other: not ours',
].join('\n');

test('dmesg lines parse into timestamped records; continuation lines join their record', () => {
  const r = parseDmesg(LOG);
  assert.equal(r.length, 8);
  assert.deepEqual(r[3], { time: 300.1, text: "loop: 'abc' invalid for parameter 'max_loop'" });
  assert.equal(r[6]?.text, 'dummy: loading out-of-tree module taints kernel. a continuation line');
});

test('a run gets the lines after its mark that name its modules, and loader lines only with their errno', () => {
  const records = parseDmesg(LOG);
  assert.deepEqual(selectLines(records, { after: 300, modules: ['loop'] }), [
    "loop: 'abc' invalid for parameter 'max_loop'",
  ]);
  assert.deepEqual(selectLines(records, { after: 300, modules: ['dummy'], errno: 'EKEYREJECTED' }), [
    'Loading of unsigned module is rejected',
    'dummy: loading out-of-tree module taints kernel. a continuation line',
  ]);
  assert.deepEqual(selectLines(records, { after: 300, modules: ['dummy'], errno: 'EINVAL' }), [
    'dummy: loading out-of-tree module taints kernel. a continuation line',
  ]);
  // '-' and '_' name the same module; a longer name that starts the same is another module.
  assert.deepEqual(selectLines(records, { after: 300, modules: ['xfs'] }), []);
  assert.deepEqual(selectLines(records, { after: 300, modules: ['xfs_other'] }), ['xfs-other: not ours']);
});

test('hostile lines: control characters stripped, the total bounded in lines and bytes, newest kept', () => {
  assert.equal(
    sanitizeLine('evil: \u001b]52;c;cGF5bG9hZA==\u0007 \u009b31m text\r'),
    'evil: ]52;c;cGF5bG9hZA== 31m text',
  );
  const many = Array.from({ length: 30 }, (_, i) => `m: line ${i} ${'x'.repeat(50)}`);
  const kept = boundLines(many).split('\n');
  assert.ok(kept.length <= MAX_KERNEL_LOG_LINES);
  assert.match(kept.at(-1) ?? '', /^m: line 29 /);
  const huge = boundLines(['m: ' + 'é'.repeat(5000)]);
  assert.ok(Buffer.byteLength(huge) <= MAX_KERNEL_LOG_BYTES);
  assert.ok(Buffer.byteLength(boundLines(many)) <= MAX_KERNEL_LOG_BYTES);
  assert.equal(quotedLine(['loop: a', 'other: b'], 'loop'), 'loop: a');
  assert.equal(
    quotedLine(['Loading of unsigned module is rejected'], 'loop'),
    'Loading of unsigned module is rejected',
  );
  assert.equal(quotedLine([], 'loop'), undefined);
});

test('KernelLog: a mark and the lines after it, from a dmesg; reads after a call see what came before it', async () => {
  const log = join(dir, 'log');
  writeFileSync(log, '[   10.000000] old: line\n');
  const dmesg = join(dir, 'dmesg');
  // A dmesg that checks it is asked for kernel records through syslog(2), then prints the log.
  writeFileSync(dmesg, `#!/bin/sh\n[ "$*" = "-S -k" ] || { echo "bad args: $*" >&2; exit 2; }\ncat ${log}\n`);
  chmodSync(dmesg, 0o755);
  const k = new KernelLog(dmesg);
  assert.equal(await k.mark(), 10);
  writeFileSync(log, '[   10.000000] old: line\n[   11.500000] new: line\n');
  const records = await k.records();
  assert.deepEqual(
    records?.map((r) => r.text),
    ['old: line', 'new: line'],
  );
  // Concurrent callers share reads.
  const all = await Promise.all([k.mark(), k.mark(), k.records(), k.records()]);
  assert.deepEqual(all.slice(0, 2), [11.5, 11.5]);
  const errors: string[] = [];
  const broken = new KernelLog(join(dir, 'no-dmesg'), (m) => errors.push(m));
  assert.equal(await broken.mark(), undefined);
  assert.equal(await broken.records(), undefined);
  assert.equal(errors.length, 1, 'reported once');
  assert.match(errors[0] ?? '', /ENOENT/);
});
