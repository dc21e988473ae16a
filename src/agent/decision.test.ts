import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NodeModulesRequest, NodeModulesResult } from '../api/types.ts';
import { decide, throttleVerdict } from './decision.ts';

const entry: NodeModulesRequest = {
  name: 'r',
  uid: 'u1',
  generation: 2,
  module: 'm',
  wait: 'Process',
  timeoutSeconds: 60,
};
const result = (over: Partial<NodeModulesResult> = {}): NodeModulesResult => ({
  name: 'r',
  uid: 'u1',
  observedGeneration: 2,
  ...over,
});
const exec = (generation = 2, aborted = false) => ({ generation, aborted });
const me = { instanceId: 'n/me' };

test('a new request on the node starts attempt 1', () => {
  assert.deepEqual(decide(entry, undefined, undefined, me), {
    action: 'start',
    attempt: 1,
    why: 'not run yet for this generation',
    cancel: undefined,
  });
});

test('the same generation in hand: nothing', () => {
  assert.deepEqual(decide(entry, undefined, exec(), me), { action: 'none', why: 'already on it' });
});

test('a request taken off the node cancels what runs for it, and only that', () => {
  assert.deepEqual(decide(undefined, undefined, exec(), me), {
    action: 'none',
    why: 'taken off the node',
    cancel: 'taken off the node',
  });
  assert.deepEqual(
    decide(undefined, undefined, exec(2, true), me),
    { action: 'none', why: 'taken off the node' },
    'already aborted',
  );
  assert.deepEqual(decide(undefined, undefined, undefined, me), {
    action: 'none',
    why: 'taken off the node',
  });
});

test('a newer generation supersedes the execution in hand and starts again', () => {
  const d = decide(entry, undefined, exec(1), me);
  assert.equal(d.action, 'start');
  assert.equal(d.cancel, 'superseded by a newer generation');
});

test('a final result for this generation: nothing (one of an older generation or another request does not count)', () => {
  assert.equal(decide(entry, result({ phase: 'Succeeded' }), undefined, me).action, 'none');
  assert.equal(decide(entry, result({ phase: 'Failed' }), undefined, me).action, 'none');
  assert.equal(
    decide(entry, result({ phase: 'Succeeded', observedGeneration: 1 }), undefined, me).action,
    'start',
  );
  assert.equal(decide(entry, result({ phase: 'Succeeded', uid: 'u0' }), undefined, me).action, 'start');
});

test('a final result of an earlier boot runs again as attempt 1; an unknown boot changes nothing', () => {
  const done = result({ phase: 'Succeeded', bootID: 'b1', attempt: 2 });
  assert.equal(decide(entry, done, undefined, { ...me, bootID: 'b1' }).action, 'none');
  assert.deepEqual(decide(entry, done, undefined, { ...me, bootID: 'b2' }), {
    action: 'start',
    attempt: 1,
    why: 'the node rebooted since its result',
    cancel: undefined,
  });
  assert.equal(decide(entry, done, undefined, { ...me, bootID: '' }).action, 'none');
  assert.equal(
    decide(entry, result({ phase: 'Succeeded' }), undefined, { ...me, bootID: 'b2' }).action,
    'none',
  );
});

test('a claim without a result, nobody here running it: attempt n+1 takes over the claim', () => {
  const d = decide(entry, result({ phase: 'Running', attempt: 3, claimedBy: 'n/old' }), undefined, me);
  assert.deepEqual(d, {
    action: 'start',
    attempt: 4,
    takesOverFrom: 'n/old',
    why: 'interrupted claim',
    cancel: undefined,
  });
  // A claim of an older generation is no interruption of this one.
  const older = decide(entry, result({ phase: 'Running', attempt: 3, observedGeneration: 1 }), undefined, me);
  assert.deepEqual([older.action, (older as { attempt: number }).attempt], ['start', 1]);
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
  const claimed = result({ phase: 'Running', attempt: 1, claimedBy: 'n/me' });
  // The claim's answer was lost after the write took effect: nothing ran, so no interruption.
  assert.deepEqual(decide(entry, claimed, undefined, { instanceId: 'n/me', startedClaimedAttempt: false }), {
    action: 'start',
    attempt: 1,
    why: 'our claim, its helper never started',
    cancel: undefined,
  });
  // Our helper did start and no result was written: it may have run, so the next attempt, visibly.
  assert.deepEqual(decide(entry, claimed, undefined, { instanceId: 'n/me', startedClaimedAttempt: true }), {
    action: 'start',
    attempt: 2,
    takesOverFrom: 'n/me',
    why: 'interrupted claim',
    cancel: undefined,
  });
  // Another process's claim is an interruption whatever we started.
  const other = decide(entry, claimed, undefined, { instanceId: 'n/other', startedClaimedAttempt: false });
  assert.equal((other as { attempt: number }).attempt, 2);
});
