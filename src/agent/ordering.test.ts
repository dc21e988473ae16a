import { test } from 'node:test';
import assert from 'node:assert/strict';
import { blockerOf, compareEntries, type LaneEntry } from './ordering.ts';

const entry = (id: string, over: Partial<LaneEntry> = {}): LaneEntry => ({
  id,
  module: 'dummy',
  created: '2025-01-01T00:00:00Z',
  requestName: id,
  busy: true,
  dryRun: false,
  ...over,
});

test('a later request for the same module waits for every earlier busy one; the earliest goes first', () => {
  const load = entry('load', { created: '2025-01-01T00:00:01Z' });
  const remove = entry('remove', { created: '2025-01-01T00:00:02Z' });
  const reload = entry('reload', { created: '2025-01-01T00:00:03Z' });
  const all = [reload, remove, load];
  assert.equal(blockerOf(load, all), undefined);
  assert.equal(blockerOf(remove, all)?.id, 'load');
  assert.equal(blockerOf(reload, all)?.id, 'load', 'the earliest blocker is named');
  // Once the load finished, the removal goes; the reload still waits for it.
  const done = [reload, remove, { ...load, busy: false }];
  assert.equal(blockerOf(remove, done), undefined);
  assert.equal(blockerOf(reload, done)?.id, 'remove');
});

test('lanes are per module, with - and _ one module; dry runs neither wait nor block', () => {
  const a = entry('a', { module: 'dm-crypt', created: '2025-01-01T00:00:01Z' });
  const b = entry('b', { module: 'dm_crypt', created: '2025-01-01T00:00:02Z' });
  const other = entry('c', { module: 'loop', created: '2025-01-01T00:00:00Z' });
  assert.equal(blockerOf(b, [a, b, other])?.id, 'a');
  assert.equal(blockerOf(a, [a, b, other]), undefined);
  const dry = entry('dry', { module: 'dm_crypt', created: '2025-01-01T00:00:00Z', dryRun: true });
  assert.equal(blockerOf(a, [dry, a]), undefined, 'an earlier dry run does not block');
  assert.equal(
    blockerOf({ ...dry, created: '2025-01-01T00:00:09Z' }, [a, dry]),
    undefined,
    'a dry run never waits',
  );
});

test('the same second: request name decides; then the id', () => {
  const same = '2025-01-01T00:00:01Z';
  assert.ok(
    compareEntries(
      entry('x', { requestName: 'a', created: same }),
      entry('y', { requestName: 'b', created: same }),
    ) < 0,
  );
  assert.ok(
    compareEntries(
      entry('x', { requestName: 'a', created: same }),
      entry('y', { requestName: 'a', created: same }),
    ) < 0,
  );
  assert.ok(
    compareEntries(entry('x', { created: '2025-01-01T00:00:02Z' }), entry('y', { created: same })) > 0,
  );
  const b = entry('b', { requestName: 'b', created: same });
  assert.equal(blockerOf(b, [entry('a', { requestName: 'a', created: same }), b])?.id, 'a');
});
