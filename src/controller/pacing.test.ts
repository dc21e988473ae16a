import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ModuleRequest, ModuleRequestStatus, PhaseCounts, RunPhase } from '../api/types.ts';
import {
  DEFAULT_PACING,
  decideWrite,
  isIdle,
  isSettled,
  knownStatus,
  progressIntervalMs,
  statusEvent,
  type PacingState,
} from './pacing.ts';

const opts = { ...DEFAULT_PACING };
const status = (phase: RunPhase, c: Partial<PhaseCounts>, generation = 1): ModuleRequestStatus => ({
  phase,
  observedGeneration: generation,
  progress: `${c.succeeded ?? 0}/${c.total ?? 1}`,
  counts: { total: 1, pending: 0, running: 0, succeeded: 0, failed: 0, ...c },
});
const pending = status('Pending', { pending: 1 });
const running = status('Running', { running: 1 });
const done = status('Succeeded', { succeeded: 1 });
const req: ModuleRequest = {
  metadata: { name: 'r', resourceVersion: '5' },
  spec: { module: 'm', nodeName: 'a' },
};

test('settled: every node reports a final result, or nothing is targeted', () => {
  assert.equal(isSettled(done), true);
  assert.equal(isSettled(status('Failed', { failed: 1 })), true);
  assert.equal(isSettled(status('Pending', { total: 0 })), true, 'NoMatchingNodes has nothing to wait for');
  assert.equal(isSettled(running), false);
  assert.equal(isSettled(status('Failed', { total: 2, failed: 1, running: 1 })), false, 'a node still runs');
});

test('a quick result: Pending and Running are never written, the settled status at once', () => {
  const s: PacingState = {};
  assert.deepEqual(decideWrite(pending, true, s, 0, opts), { write: false, afterMs: 1000 });
  assert.deepEqual(decideWrite(running, true, s, 300, opts), { write: false, afterMs: 700 });
  assert.deepEqual(decideWrite(done, true, s, 400, opts), { write: true });
});

test('a slow run is written Running once it stayed unwritten for the delay', () => {
  const s: PacingState = {};
  decideWrite(pending, true, s, 0, opts);
  decideWrite(running, true, s, 200, opts);
  assert.deepEqual(decideWrite(running, true, s, 1000, opts), { write: true });
});

test('after a write, unsettled writes are at least the interval apart; a settled one is not held', () => {
  const s: PacingState = { lastWrite: 5000 };
  const progress = status('Running', { total: 50, succeeded: 10, running: 40 });
  // The delay has long passed since the change was first seen, but the last write was 200 ms ago.
  s.since = 1000;
  assert.deepEqual(decideWrite(progress, true, s, 5200, opts), { write: false, afterMs: 800 });
  assert.deepEqual(decideWrite(progress, true, s, 6000, opts), { write: true });
  const all = status('Succeeded', { total: 50, succeeded: 50 });
  assert.deepEqual(decideWrite(all, true, { lastWrite: 6000 }, 6001, opts), { write: true });
});

test('a big fan-out writes its progress further apart: 5 ms a node, at least 1 s, at most 10 s', () => {
  assert.equal(progressIntervalMs(opts, 1), 1000);
  assert.equal(progressIntervalMs(opts, 200), 1000);
  assert.equal(progressIntervalMs(opts, 1000), 5000);
  assert.equal(progressIntervalMs(opts, 5000), 10_000);
  const progress = status('Running', { total: 1000, succeeded: 10, running: 990 });
  const s: PacingState = { lastWrite: 5000, since: 1000 };
  assert.deepEqual(decideWrite(progress, true, s, 6000, opts), { write: false, afterMs: 4000 });
  assert.deepEqual(decideWrite(progress, true, s, 10_000, opts), { write: true });
  // A settled status is never held back by the longer interval.
  const all = status('Succeeded', { total: 1000, succeeded: 1000 });
  assert.deepEqual(decideWrite(all, true, { lastWrite: 10_000 }, 10_001, opts), { write: true });
});

test('an unchanged status is not written and clears a pending deferral', () => {
  const s: PacingState = { since: 10, lastWrite: 1 };
  assert.deepEqual(decideWrite(running, false, s, 5000, opts), { write: false });
  assert.equal(s.since, undefined);
  assert.equal(s.lastWrite, 1);
});

test('while the cache lags our own write, the written status is what the server holds', () => {
  const s: PacingState = { written: { overResourceVersion: '5', status: done } };
  assert.equal(knownStatus({ ...req, status: pending }, s), done, 'cache still at the version written over');
  assert.equal(knownStatus({ ...req, metadata: { resourceVersion: '6' }, status: done }, s), done);
  assert.equal(s.written, undefined, 'dropped once the cache moved past it');
  assert.equal(isIdle(s, done), true);
  assert.equal(isIdle({ since: 1 }, running), false);
});

test('Events: failures always, a summary for a success over several nodes, none for one node', () => {
  const failed: ModuleRequestStatus = {
    ...status('Failed', { failed: 1 }),
    conditions: [
      {
        type: 'Failed',
        status: 'True',
        lastTransitionTime: 't',
        reason: 'ExitCode',
        message: '1 of 1 node(s) failed; a: exited 1',
      },
    ],
  };
  assert.deepEqual(statusEvent(req, {}, failed), {
    type: 'Warning',
    reason: 'ExitCode',
    message: '1 of 1 node(s) failed; a: exited 1',
  });
  assert.equal(statusEvent(req, {}, done), undefined, 'one node: the status says it');
  const many: ModuleRequestStatus = {
    ...status('Succeeded', { total: 3, succeeded: 3 }),
    conditions: [
      {
        type: 'Succeeded',
        status: 'True',
        lastTransitionTime: 't',
        reason: 'AllNodesSucceeded',
        message: 'm loaded on 3 of 3 node(s)',
      },
    ],
  };
  assert.deepEqual(statusEvent(req, pending, many), {
    type: 'Normal',
    reason: 'Succeeded',
    message: 'm loaded on 3 of 3 node(s)',
  });
  assert.equal(statusEvent(req, many, many), undefined, 'no transition, no Event');
  assert.ok(
    statusEvent(req, { ...many, observedGeneration: 0 }, many),
    'a new generation that succeeded again',
  );
});
