import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentRuns, startedKey } from './runs.ts';

test('one run per request UID, made on first use; forget drops all of it', () => {
  const runs = new AgentRuns();
  assert.equal(runs.get('u1'), undefined);
  const r = runs.run('u1');
  assert.equal(runs.run('u1'), r, 'the same run each time');
  r.started.add(startedKey(1, 1, 'b1'));
  runs.report('u1', { name: 'r', uid: 'u1', phase: 'Running' }, { uid: 'u1', generation: 1, attempt: 1 });
  assert.equal(r.dirty, true);
  assert.equal(r.owner?.attempt, 1);
  runs.forget('u1');
  assert.equal(runs.get('u1'), undefined);
  assert.equal(runs.run('u1').started.size, 0, 'a new run remembers nothing of the old');
});

test('parked runs: park says whether it was parked; takeParked hands each back once', () => {
  const runs = new AgentRuns();
  assert.equal(runs.park('u1', true), false);
  assert.equal(runs.park('u1', true), true);
  runs.park('u2', true);
  assert.equal(runs.park('u3', false), false, 'unparking an unknown run makes none');
  assert.equal(runs.get('u3'), undefined);
  assert.deepEqual(runs.takeParked().sort(), ['u1', 'u2']);
  assert.deepEqual(runs.takeParked(), []);
});
