import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_REQUESTS_PER_NODE,
  NODE_STATUS_BUDGET_BYTES,
  RESULT_LIMITS,
  type NodeModulesResult,
} from '../api/types.ts';
import { cut, fitResults, sizeOf, tail, withinLimits } from './budget.ts';

/** A result with every field at (or past) its limit: the worst a helper can make the agent write. */
const worst = (i: number, phase: NodeModulesResult['phase'] = 'Failed'): NodeModulesResult => ({
  name: `r${i}-${'n'.repeat(240)}`,
  uid: `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`,
  observedGeneration: 1,
  phase,
  reason: 'ExitCode',
  message: 'm'.repeat(5000),
  exitCode: 1,
  signal: 'SIGKILL',
  stderrTail: 'é'.repeat(4000),
  stderrBytes: 123456,
  startTime: '2026-01-01T00:00:00Z',
  finishTime: `2026-01-01T00:${String(i % 60).padStart(2, '0')}:00Z`,
  bootID: '0123456789abcdef0123456789abcdef',
  attempt: 1,
  claimedBy: `node-${'x'.repeat(60)}/abcdef012345`,
  resolved: Array.from({ length: 100 }, (_, j) => `mod_${j}_${'q'.repeat(80)}`),
  verified: Array.from({ length: 100 }, (_, j) => `mod_${j}_${'q'.repeat(80)}`),
  errno: 'E'.repeat(50),
  kernelLog: 'k'.repeat(3000),
});

test('cut and tail bound text; tail keeps the end and never splits a UTF-8 character', () => {
  assert.equal(cut('abcdef', 4), 'abc…');
  assert.equal(cut('abc', 4), 'abc');
  const t = tail('aé'.repeat(10), 7);
  assert.ok(Buffer.byteLength(t) <= 7);
  assert.ok(!t.includes('\uFFFD'));
  assert.ok('aé'.repeat(10).endsWith(t));
});

test('every field within the CRD’s limits', () => {
  const r = withinLimits(worst(1));
  assert.ok((r.message ?? '').length <= RESULT_LIMITS.message);
  assert.ok(Buffer.byteLength(r.stderrTail ?? '') <= RESULT_LIMITS.stderrTail);
  assert.ok(Buffer.byteLength(r.kernelLog ?? '') <= RESULT_LIMITS.kernelLog);
  assert.equal(r.resolved?.length, RESULT_LIMITS.names);
  assert.ok(r.resolved?.every((n) => n.length <= RESULT_LIMITS.name));
  assert.ok((r.errno ?? '').length <= RESULT_LIMITS.errno);
});

test('a full node with every field at its worst fits the status budget; running results are trimmed last', () => {
  const all = Array.from({ length: MAX_REQUESTS_PER_NODE }, (_, i) =>
    worst(i, i % 3 === 0 ? 'Succeeded' : i % 3 === 1 ? 'Failed' : 'Running'),
  );
  assert.ok(
    sizeOf(all.map(withinLimits)) > NODE_STATUS_BUDGET_BYTES,
    'the worst case is over budget untrimmed',
  );
  const fitted = fitResults(all);
  assert.ok(sizeOf(fitted) <= NODE_STATUS_BUDGET_BYTES, `${sizeOf(fitted)} bytes`);
  assert.equal(fitted.length, all.length);
  for (const [i, r] of fitted.entries()) {
    const orig = all[i] as NodeModulesResult;
    assert.equal(r.phase, orig.phase);
    assert.equal(r.reason, orig.reason);
    assert.equal(r.attempt, orig.attempt);
  }
  const few = [worst(1, 'Running'), ...Array.from({ length: 200 }, (_, i) => worst(i + 2, 'Succeeded'))];
  const fittedFew = fitResults(few);
  assert.ok(sizeOf(fittedFew) <= NODE_STATUS_BUDGET_BYTES);
  assert.deepEqual(
    fittedFew[0],
    withinLimits(few[0]!),
    'with room made by finished ones, a running one keeps everything',
  );
});

test('trimming takes successes’ evidence first, oldest first, and stops once within budget', () => {
  const all = [worst(1, 'Failed'), worst(2, 'Succeeded'), worst(3, 'Succeeded')];
  const full = sizeOf(all.map(withinLimits));
  const stderrAndLog = Buffer.byteLength(
    JSON.stringify({
      stderrTail: withinLimits(all[1]!).stderrTail,
      kernelLog: withinLimits(all[1]!).kernelLog,
    }),
  );
  const fitted = fitResults(all, full - stderrAndLog + 10);
  assert.equal(fitted[1]?.stderrTail, undefined, 'the oldest success lost its tail');
  assert.ok(fitted[2]?.stderrTail, 'the newer success kept its');
  assert.ok(fitted[0]?.stderrTail, 'the failure kept its');
  assert.deepEqual(fitResults(all, 1 << 30), all.map(withinLimits), 'nothing trimmed under budget');
});
