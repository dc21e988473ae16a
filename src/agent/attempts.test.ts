import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextAttempt } from './attempts.ts';
import { startedKey } from './runs.ts';

const claim = { observedGeneration: 3, phase: 'Running' as const, attempt: 1, claimedBy: 'node-a/1' };

test('no claim for this generation: attempt 1', () => {
  assert.deepEqual(nextAttempt(undefined, 3, 'node-a/1', false), { attempt: 1 });
  assert.deepEqual(nextAttempt({ ...claim, observedGeneration: 2 }, 3, 'node-a/1', false), { attempt: 1 });
  assert.deepEqual(nextAttempt({ ...claim, phase: 'Succeeded' }, 3, 'node-a/1', false), { attempt: 1 });
});

test("another process's claim without a result: the next attempt, taking over from it", () => {
  assert.deepEqual(nextAttempt(claim, 3, 'node-a/2', false), { attempt: 2, takesOverFrom: 'node-a/1' });
  assert.deepEqual(nextAttempt({ ...claim, attempt: 2 }, 3, 'node-a/3', false), {
    attempt: 3,
    takesOverFrom: 'node-a/1',
  });
});

test('our own claim whose helper we started (its result never written): the next attempt', () => {
  assert.deepEqual(nextAttempt(claim, 3, 'node-a/1', true), { attempt: 2, takesOverFrom: 'node-a/1' });
});

test('our own claim whose helper never started (the claim answer was lost): the same attempt', () => {
  assert.deepEqual(nextAttempt(claim, 3, 'node-a/1', false), { attempt: 1 });
  assert.deepEqual(nextAttempt({ ...claim, attempt: 2 }, 3, 'node-a/1', false), { attempt: 2 });
});

test('started keys tell generations, attempts and boots apart (a run keeps its own set)', () => {
  const keys = new Set([
    startedKey(1, 1, 'b1'),
    startedKey(1, 2, 'b1'),
    startedKey(2, 1, 'b1'),
    startedKey(1, 1, 'b2'),
  ]);
  assert.equal(keys.size, 4);
});
