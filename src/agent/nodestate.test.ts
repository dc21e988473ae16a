/** The node helper states, with waits driven by node:test's mock timers (no wall-clock waits). */
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeHelperState, parseHelperState } from './nodestate.ts';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
afterEach(() => mock.timers.reset());

/** Lets pending promise continuations run (setImmediate is not mocked). */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
};

/** A fake "helpers running" counter whose idle() resolves when it reaches 0. */
function counter() {
  let n = 0;
  let waiters: Array<() => void> = [];
  return {
    start: () => n++,
    finish: () => {
      if (--n === 0) {
        for (const w of waiters) w();
        waiters = [];
      }
    },
    running: () => n,
    idle: () => (n === 0 ? Promise.resolve() : new Promise<void>((r) => waiters.push(r))),
  };
}

test('starts Disabled; runs wait until enabled', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  assert.equal(s.state, 'Disabled');
  let woke: boolean | undefined;
  const waiting = s.whenEnabled(10_000).then((v) => (woke = v));
  mock.timers.tick(9999);
  await settle();
  assert.equal(woke, undefined, 'still waiting');
  await s.set('Enabled');
  await waiting;
  assert.equal(woke, true);
});

test('Freezing: new runs wait, and give up (stay pending) after the wait limit', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Freezing');
  const gaveUp = s.whenEnabled(30_000);
  mock.timers.tick(30_000);
  assert.equal(await gaveUp, false);
  const w = s.whenEnabled(10_000);
  await s.set('Enabled');
  assert.equal(await w, true);
});

test('disable drains running helpers, then is Disabled', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Enabled');
  c.start();
  const disabling = s.set('Disabled', 5000);
  assert.equal(s.state, 'Disabled', 'new helpers stop at once');
  mock.timers.tick(4999);
  c.finish();
  const r = await disabling;
  assert.deepEqual([r.state, r.ok], ['Disabled', true]);
  assert.match(r.message, /after 1 running helper\(s\) finished/);
  const w = s.whenEnabled(20);
  mock.timers.tick(20);
  assert.equal(await w, false, 'new runs do not start while disabled');
});

test('a disable whose helpers do not finish in time reverts to Enabled and fails (EAGAIN)', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Enabled');
  c.start();
  const disabling = s.set('Disabled', 5000);
  mock.timers.tick(5000);
  const r = await disabling;
  assert.equal(r.ok, false);
  assert.equal(r.state, 'Enabled');
  assert.equal(s.state, 'Enabled');
  assert.match(r.message, /disable failed \(EAGAIN\): 1 helper\(s\) still running after 5 s/);
  c.finish();
});

test('an aborted wait resolves false at once', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  const ac = new AbortController();
  const w = s.whenEnabled(10_000, ac.signal);
  ac.abort();
  assert.equal(await w, false);
});

test('the annotation value is parsed case-insensitively; nonsense is an error naming it', () => {
  assert.equal(parseHelperState(undefined), 'Enabled');
  assert.equal(parseHelperState('disabled'), 'Disabled');
  assert.throws(
    () => parseHelperState('off'),
    /kmod.dev\/helpers="off" is not one of Enabled, Freezing, Disabled/,
  );
});
