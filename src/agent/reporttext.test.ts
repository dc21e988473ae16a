import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  afterInvalid,
  cleanReport,
  MAX_MESSAGE,
  MAX_STDERR_TAIL,
  MINIMAL_MESSAGE,
  SHORT_TEXT,
} from './reporttext.ts';

const keep = (r: { phase?: string; reason?: string; message?: string; stderrTail?: string }) => ({
  phase: r.phase,
});

test('cleanReport strips control characters and bounds each text to its CRD maximum', () => {
  const r = cleanReport({
    phase: 'Failed',
    reason: 'Exit\u001bCode',
    message: `denied: ${'x'.repeat(10_000)}`,
    stderrTail: `${'early '.repeat(2000)}\u001b]52;c;cm0K\u0007modprobe: FATAL: the end\n`,
  });
  assert.equal(r.phase, 'Failed');
  assert.equal(r.reason, 'ExitCode');
  assert.equal(r.message?.length, MAX_MESSAGE);
  assert.match(r.message ?? '', /^denied: x+… \(cut\)$/);
  // The tail keeps the end of stderr, where the error is.
  assert.equal(r.stderrTail?.length, MAX_STDERR_TAIL);
  assert.ok(r.stderrTail?.endsWith(']52;c;cm0Kmodprobe: FATAL: the end\n'));
  // Short, clean texts pass as they are.
  const fine = { phase: 'Failed', reason: 'Denied', message: 'no', stderrTail: 'x\n' };
  assert.deepEqual(cleanReport(fine), fine);
});

test('after a 422: first shortened, then minimal with the API server’s reason, then dropped', () => {
  const r = { phase: 'Failed', reason: 'Denied', message: 'm'.repeat(4000), stderrTail: 't'.repeat(4000) };
  const first = afterInvalid(r, 1, keep, 'status.message: Too long');
  assert.ok('write' in first);
  assert.equal(first.write.phase, 'Failed');
  assert.equal(first.write.message?.length, SHORT_TEXT);
  assert.equal(first.write.stderrTail?.length, SHORT_TEXT);
  const second = afterInvalid(r, 2, keep, 'status.message: Too long');
  assert.deepEqual(second, { write: { phase: 'Failed', reason: 'Denied', message: MINIMAL_MESSAGE } });
  assert.ok(MINIMAL_MESSAGE.length <= 64);
  const third = afterInvalid(r, 3, keep, 'status.message: Too long');
  assert.deepEqual(third, {
    drop: 'the API server refused this result 3 times as invalid: status.message: Too long',
  });
});
