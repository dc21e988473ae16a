import { test } from 'node:test';
import assert from 'node:assert/strict';
import { failedCall, parseTrace } from './trace.ts';

test('strace lines become module calls with their errno and module', () => {
  const t = parseTrace(
    [
      'finit_module(3</lib/modules/6.1.0-9-amd64/kernel/lib/libcrc32c.ko.xz>, "", 0) = 0',
      'finit_module(3</lib/modules/6.1.0-9-amd64/kernel/drivers/block/loop.ko.xz>, "max_loop=abc", 0) = -1 EINVAL (Invalid argument)',
      'init_module(0x7f3c2a1b4010, 16384, "") = -1 EKEYREJECTED (Key was rejected by service)',
      'delete_module("dummy", O_NONBLOCK) = 0',
      '[pid  4242] delete_module("xfs", O_NONBLOCK) = -1 EBUSY (Device or resource busy)',
      'strace: Process 12 attached',
      'something else entirely',
      '',
    ].join('\n'),
  );
  assert.deepEqual(t.calls, [
    { call: 'finit_module', module: 'libcrc32c', ok: true },
    { call: 'finit_module', module: 'loop', ok: false, errno: 'EINVAL', errnoText: 'Invalid argument' },
    { call: 'init_module', ok: false, errno: 'EKEYREJECTED', errnoText: 'Key was rejected by service' },
    { call: 'delete_module', module: 'dummy', ok: true },
    { call: 'delete_module', module: 'xfs', ok: false, errno: 'EBUSY', errnoText: 'Device or resource busy' },
  ]);
  assert.deepEqual(t.errors, ['strace: Process 12 attached']);
  assert.equal(failedCall(t)?.module, 'xfs');
  assert.equal(failedCall(parseTrace('finit_module(3</x/a.ko>, "", 0) = 0\n')), undefined);
});

test('a hostile path or parameter string cannot forge a second call on the same line', () => {
  const t = parseTrace(
    'finit_module(3</m/x) = 0 evil>, "a\\") = -1 EPERM (Operation not permitted)", 0) = -1 EINVAL (Invalid argument)\n',
  );
  assert.equal(t.calls.length, 1);
  assert.equal(t.calls[0]?.errno, 'EINVAL');
});
