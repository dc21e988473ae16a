import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeHelperState, parseHelperState } from './nodestate.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

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
  const waiting = s.whenEnabled(10_000);
  await sleep(10);
  await s.set('Enabled');
  assert.equal(await waiting, true);
});

test('Freezing: new runs wait, and give up (stay pending) after the wait limit', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Freezing');
  assert.equal(await s.whenEnabled(30), false);
  const w = s.whenEnabled(10_000);
  await s.set('Enabled');
  assert.equal(await w, true);
});

test('disable drains running helpers, then is Disabled', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Enabled');
  c.start();
  setTimeout(() => c.finish(), 50);
  const r = await s.set('Disabled', 1000);
  assert.deepEqual([r.state, r.ok], ['Disabled', true]);
  assert.equal(await s.whenEnabled(20), false, 'new runs do not start while disabled');
});

test('a disable whose helpers do not finish in time reverts to Enabled and fails (EAGAIN)', async () => {
  const c = counter();
  const s = new NodeHelperState(c.running, c.idle);
  await s.set('Enabled');
  c.start();
  const r = await s.set('Disabled', 50);
  assert.equal(r.ok, false);
  assert.equal(r.state, 'Enabled');
  assert.equal(s.state, 'Enabled');
  assert.match(r.message, /disable failed \(EAGAIN\): 1 helper\(s\) still running after 0.05 s/);
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
