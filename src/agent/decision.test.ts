import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModuleRun, ModuleRunStatus } from '../api/types.ts';
import { decide, throttleVerdict } from './decision.ts';

function run(status?: ModuleRunStatus, meta: Partial<ModuleRun['metadata']> = {}): ModuleRun {
  return {
    metadata: { name: 'r', uid: 'u1', generation: 2, ...meta },
    spec: { module: 'm', nodeName: 'n', wait: 'Process', timeoutSeconds: 60 },
    ...(status ? { status } : {}),
  };
}
const exec = (uid = 'u1', generation = 2, aborted = false) => ({ uid, generation, aborted });

test('a new run starts attempt 1', () => {
  assert.deepEqual(decide(run(), undefined), {
    action: 'start',
    attempt: 1,
    why: 'not run yet for this generation',
    cancel: undefined,
  });
});

test('the same UID and generation in hand: nothing', () => {
  assert.deepEqual(decide(run(), exec()), { action: 'none', why: 'already on it' });
});

test('a deleted run cancels what runs for it, and only that', () => {
  assert.deepEqual(decide(undefined, exec()), { action: 'none', why: 'run deleted', cancel: 'run deleted' });
  assert.deepEqual(decide(run(undefined, { deletionTimestamp: new Date() }), exec()), {
    action: 'none',
    why: 'run deleted',
    cancel: 'run deleted',
  });
  assert.deepEqual(
    decide(undefined, exec('u1', 2, true)),
    { action: 'none', why: 'run deleted' },
    'already aborted',
  );
  assert.deepEqual(decide(undefined, undefined), { action: 'none', why: 'run deleted' });
});

test('a newer generation or a recreated run supersedes the execution in hand and starts again', () => {
  const d = decide(run(), exec('u1', 1));
  assert.equal(d.action, 'start');
  assert.equal(d.cancel, 'superseded by a newer generation');
  assert.equal(decide(run(), exec('u0', 2)).cancel, 'run was recreated');
});

test('a result recorded for this generation: nothing (a terminal status of an older generation does not count)', () => {
  assert.equal(decide(run({ observedGeneration: 2, phase: 'Succeeded' }), undefined).action, 'none');
  assert.equal(decide(run({ observedGeneration: 2, phase: 'Failed' }), undefined).action, 'none');
  assert.equal(decide(run({ observedGeneration: 1, phase: 'Succeeded' }), undefined).action, 'start');
  assert.equal(
    decide(run(), undefined, { reportedGeneration: 2 }).why,
    'our result is written; the cache has not caught up',
  );
});

test('a claim without a result, nobody here running it: attempt n+1 takes over the claim', () => {
  const d = decide(
    run({ observedGeneration: 2, phase: 'Running', attempt: 3, claimedBy: 'n/old' }),
    undefined,
  );
  assert.deepEqual(d, {
    action: 'start',
    attempt: 4,
    takesOverFrom: 'n/old',
    why: 'interrupted claim',
    cancel: undefined,
  });
  // A claim of an older generation is no interruption of this one.
  assert.equal(
    decide(run({ observedGeneration: 1, phase: 'Running', attempt: 3 }), undefined).action,
    'start',
  );
  assert.equal(
    (decide(run({ observedGeneration: 1, phase: 'Running', attempt: 3 }), undefined) as { attempt: number })
      .attempt,
    1,
  );
});

test('a result of ours not written yet is written, not run again', () => {
  const running = run({ observedGeneration: 2, phase: 'Running', attempt: 1, claimedBy: 'me' });
  assert.equal(decide(running, undefined, { unreported: { uid: 'u1', generation: 2 } }).action, 'report');
  assert.equal(
    decide(running, undefined, { unreported: { uid: 'u1', generation: 1 } }).action,
    'start',
    'a stale result is not written',
  );
});

test('throttleVerdict: retry while the next try starts within timeoutSeconds of the first', () => {
  const first = 1_000_000;
  // [ms since the first try, next backoff, timeoutSeconds, verdict]
  const cases: [number, number, number, 'retry' | 'fail'][] = [
    [1500, 1000, 60, 'retry'],
    [2500, 1000, 3, 'fail'], // the node test's burst: 2.5 s busy + 1 s backoff > 3 s
    [58_000, 2000, 60, 'fail'], // exactly at the limit: no try would start in time
    [57_000, 2000, 60, 'retry'],
  ];
  for (const [elapsed, nextDelayMs, timeoutSeconds, want] of cases) {
    assert.equal(
      throttleVerdict({ firstAttemptMs: first, nowMs: first + elapsed, nextDelayMs, timeoutSeconds }),
      want,
      `${elapsed} ms in, next try in ${nextDelayMs} ms, timeoutSeconds ${timeoutSeconds}`,
    );
  }
});

test('our own claim whose helper never started is the same attempt; one whose helper started is the next', () => {
  const claimed = run({ observedGeneration: 2, phase: 'Running', attempt: 1, claimedBy: 'n/me' });
  // The claim's answer was lost after the write took effect: nothing ran, so no interruption.
  assert.deepEqual(decide(claimed, undefined, { instanceId: 'n/me', startedClaimedAttempt: false }), {
    action: 'start',
    attempt: 1,
    why: 'our claim, its helper never started',
    cancel: undefined,
  });
  // Our helper did start and no result was written: it may have run, so the next attempt, visibly.
  assert.deepEqual(decide(claimed, undefined, { instanceId: 'n/me', startedClaimedAttempt: true }), {
    action: 'start',
    attempt: 2,
    takesOverFrom: 'n/me',
    why: 'interrupted claim',
    cancel: undefined,
  });
  // Another process's claim is an interruption whatever we started.
  assert.equal(
    (
      decide(claimed, undefined, { instanceId: 'n/other', startedClaimedAttempt: false }) as {
        attempt: number;
      }
    ).attempt,
    2,
  );
});
