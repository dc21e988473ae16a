/** The helper slots, with the busy timeout driven by node:test's mock timers (no wall-clock waits). */
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { CancelledError, HelperSlots, ThrottledError } from './slots.ts';

beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
afterEach(() => mock.timers.reset());

/** Lets pending promise continuations run (setImmediate is not mocked). */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
};

/** A task that holds its slot until released. */
function holder() {
  let release = () => {};
  const done = new Promise<void>((r) => (release = r));
  return { fn: () => done, release };
}

test('never runs more than max at once; a freed slot goes to the next waiter', async () => {
  const slots = new HelperSlots(3, 10_000);
  let alive = 0;
  let peak = 0;
  const tasks = Array.from({ length: 12 }, () => holder());
  const all = Promise.all(
    tasks.map((t) =>
      slots.run(async () => {
        peak = Math.max(peak, ++alive);
        await t.fn();
        alive--;
      }),
    ),
  );
  await settle();
  assert.deepEqual([slots.running, slots.waiting], [3, 9]);
  for (const t of tasks) {
    t.release();
    await settle();
  }
  await all;
  assert.equal(peak, 3);
});

test('a waiter that gets no slot within the busy timeout is throttled, with the cap in the message', async () => {
  const slots = new HelperSlots(1, 5000);
  const h = holder();
  const held = slots.run(h.fn);
  const seen: { err?: unknown } = {};
  const waiter = slots.run(() => Promise.resolve('never')).catch((err: unknown) => (seen.err = err));
  mock.timers.tick(4999);
  await settle();
  assert.equal(seen.err, undefined, 'still waiting 1 ms before the busy timeout');
  mock.timers.tick(1);
  const err = await waiter;
  assert.ok(err instanceof ThrottledError, 'throttled');
  assert.match(err.message, /^all 1 helper slots stayed busy for 5 s$/);
  assert.equal(slots.waiting, 0, 'the throttled waiter left the line');
  h.release();
  await held;
});

test('a waiter that gets a slot within the busy timeout runs, and its timer no longer fires', async () => {
  const slots = new HelperSlots(1, 5000);
  const h = holder();
  const held = slots.run(h.fn);
  const waiter = slots.run(() => Promise.resolve('ran'));
  mock.timers.tick(4999);
  h.release();
  assert.equal(await waiter, 'ran');
  mock.timers.tick(10_000);
  await held;
});

test('cancelling a waiter takes it out of line at once; a running task is not interrupted', async () => {
  const slots = new HelperSlots(1, 10_000);
  const running = new AbortController();
  const h = holder();
  let finished = false;
  const held = slots.run(async () => {
    await h.fn();
    finished = true;
  }, running.signal);
  const waiting = new AbortController();
  const waiter = slots.run(() => Promise.resolve('never'), waiting.signal);
  waiting.abort('run deleted');
  // No time passes on the fake clock: the rejection comes from the abort, not from the busy timeout.
  await assert.rejects(
    waiter,
    (err: unknown) => err instanceof CancelledError && /run deleted/.test(err.message),
  );
  assert.equal(slots.waiting, 0);
  running.abort('run deleted'); // the holder has started: it runs to the end
  await settle();
  assert.equal(finished, false);
  h.release();
  await held;
  assert.equal(finished, true);
});

test('drained() resolves once no slot is in use (the drain signal), at once when idle', async () => {
  const slots = new HelperSlots(2, 10_000);
  let drained = false;
  await slots.drained();
  const a = holder();
  const b = holder();
  const runs = [slots.run(a.fn), slots.run(b.fn)];
  await settle();
  void slots.drained().then(() => (drained = true));
  a.release();
  await settle();
  assert.equal(drained, false, 'one helper still runs');
  b.release();
  await Promise.all(runs);
  await settle();
  assert.equal(drained, true);
});

test('refuses nonsense settings', () => {
  assert.throws(() => new HelperSlots(0, 1), /whole number >= 1/);
  assert.throws(() => new HelperSlots(1, -1), />= 0 ms/);
});
