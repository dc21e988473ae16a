import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Limiter } from './limiter.ts';

/** A task that stays running until released; records when it started. */
function gated(order: string[], name: string) {
  const { promise, resolve } = Promise.withResolvers<void>();
  return {
    release: resolve,
    task: async () => {
      order.push(name);
      await promise;
      return name;
    },
  };
}

test('at most max run at once; the rest wait, high before low, in arrival order within each', async () => {
  const l = new Limiter(2);
  const order: string[] = [];
  const tasks = Object.fromEntries(['a', 'b', 'low1', 'low2', 'high1'].map((n) => [n, gated(order, n)]));
  const t = (n: string) => tasks[n] ?? assert.fail(n);
  const done = [
    l.run('low', t('a').task),
    l.run('low', t('b').task),
    l.run('low', t('low1').task),
    l.run('low', t('low2').task),
    l.run('high', t('high1').task),
  ];
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['a', 'b']);
  assert.deepEqual([l.running, l.waiting], [2, 3]);
  t('a').release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['a', 'b', 'high1'], 'the high task jumps the low queue');
  for (const n of ['b', 'high1', 'low1', 'low2']) {
    t(n).release();
    await new Promise((r) => setImmediate(r));
  }
  assert.deepEqual(await Promise.all(done), ['a', 'b', 'low1', 'low2', 'high1']);
  assert.deepEqual(order, ['a', 'b', 'high1', 'low1', 'low2']);
  assert.deepEqual([l.running, l.waiting], [0, 0]);
});

test('a task that throws frees its place and rejects only its own caller', async () => {
  const l = new Limiter(1);
  const failed = l.run('high', () => Promise.reject(new Error('boom')));
  const next = l.run('low', () => Promise.resolve('next'));
  await assert.rejects(failed, /boom/);
  assert.equal(await next, 'next');
  assert.equal(l.running, 0);
  assert.throws(() => new Limiter(0), /max must be a whole number >= 1/);
});

test('reserved places: low work never takes the last ones, so high work never waits behind it', async () => {
  const l = new Limiter(3, 1);
  const order: string[] = [];
  const lows = ['l1', 'l2', 'l3'].map((n) => gated(order, n));
  const done = lows.map((g) => l.run('low', g.task));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['l1', 'l2'], 'two of three places for low work');
  const high = gated(order, 'h1');
  const h = l.run('high', high.task);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['l1', 'l2', 'h1'], 'the reserved place is free for high work at once');
  high.release();
  assert.equal(await h, 'h1');
  lows[0]?.release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['l1', 'l2', 'h1', 'l3']);
  for (const g of lows) g.release();
  await Promise.all(done);
  assert.deepEqual([l.running, l.waiting], [0, 0]);
  assert.throws(() => new Limiter(2, 2), /reserved must be/);
});
