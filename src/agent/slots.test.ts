import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CancelledError, HelperSlots, ThrottledError } from './slots.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

test('never runs more than max at once', async () => {
  const slots = new HelperSlots(3, 10_000);
  let alive = 0;
  let peak = 0;
  await Promise.all(
    Array.from({ length: 12 }, () =>
      slots.run(async () => {
        peak = Math.max(peak, ++alive);
        await sleep(10);
        alive--;
      }),
    ),
  );
  assert.equal(peak, 3);
});

test('a waiter that gets no slot within the busy timeout is throttled, with the cap in the message', async () => {
  const slots = new HelperSlots(1, 50);
  const holder = slots.run(() => sleep(300));
  await assert.rejects(
    slots.run(() => Promise.resolve('never')),
    (err: unknown) => {
      assert.ok(err instanceof ThrottledError);
      assert.match(err.message, /all 1 helper slots stayed busy for 0.05 s/);
      return true;
    },
  );
  assert.equal(slots.waiting, 0, 'the throttled waiter left the line');
  await holder;
});

test('a waiter that gets a slot within the busy timeout runs', async () => {
  const slots = new HelperSlots(1, 1000);
  const first = slots.run(() => sleep(30));
  assert.equal(await slots.run(() => Promise.resolve('ran')), 'ran');
  await first;
});

test('cancelling a waiter takes it out of line at once; a running task is not interrupted', async () => {
  const slots = new HelperSlots(1, 10_000);
  const running = new AbortController();
  let finished = false;
  const holder = slots.run(async () => {
    await sleep(100);
    finished = true;
  }, running.signal);
  const waiting = new AbortController();
  const waiter = slots.run(() => Promise.resolve('never'), waiting.signal);
  const t0 = Date.now();
  waiting.abort('run deleted');
  await assert.rejects(waiter, CancelledError);
  assert.ok(Date.now() - t0 < 50, 'cancelled at once, not after the busy timeout');
  running.abort('run deleted'); // the holder has started: it runs to the end
  await holder;
  assert.equal(finished, true);
});

test('refuses nonsense settings', () => {
  assert.throws(() => new HelperSlots(0, 1), /whole number >= 1/);
  assert.throws(() => new HelperSlots(1, -1), />= 0 ms/);
});
