import { test } from 'node:test';
import assert from 'node:assert/strict';
import { settleBounded } from './dispatch.ts';

test('outcomes come back in the order of the items, failures as outcomes', async () => {
  const out = await settleBounded([3, 1, 2, 0], 2, async (n) => {
    await new Promise((r) => setTimeout(r, n * 5));
    if (n === 2) throw new Error('two');
    return n * 10;
  });
  assert.deepEqual(
    out.map((o) => (o.ok ? o.value : (o.error as Error).message)),
    [30, 10, 'two', 0],
  );
});

test('never more than `limit` calls in flight, and all of them run', async () => {
  let inFlight = 0;
  let peak = 0;
  const out = await settleBounded(
    Array.from({ length: 50 }, (_, i) => i),
    7,
    async () => {
      peak = Math.max(peak, ++inFlight);
      await new Promise((r) => setImmediate(r));
      inFlight--;
    },
  );
  assert.equal(out.length, 50);
  assert.ok(out.every((o) => o.ok));
  assert.equal(peak, 7);
});

test('no items: no calls; a bad limit is refused', async () => {
  assert.deepEqual(await settleBounded([], 4, () => Promise.reject(new Error('called'))), []);
  await assert.rejects(
    settleBounded([1], 0, () => Promise.resolve(1)),
    /limit must be a whole number >= 1, got 0/,
  );
});
