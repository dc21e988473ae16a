/**
 * The work queue, with time driven by node:test's mock timers (a fake clock,
 * as client-go tests its rate limiters): delays are asserted exactly, and no
 * test waits on the wall clock.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { ApiException } from '@kubernetes/client-node';
import { silentLogger } from '../observability/logger.ts';
import { WorkQueue, type ReconcileResult, type WorkQueueOptions } from './workqueue.ts';

/** Lets every pending promise continuation run (setImmediate is not mocked). */
const settle = async () => {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
};

/** Advances the fake clock by `ms`, letting reconciles that become due run. */
async function tick(ms: number): Promise<void> {
  mock.timers.tick(ms);
  await settle();
}

/** A promise with its resolve function, to hold a reconcile open. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** A queue over a reconcile that may be synchronous (its throws become rejections). */
function queue(
  reconcile: (key: string) => ReconcileResult | void | Promise<ReconcileResult | void>,
  opts: Partial<WorkQueueOptions> = {},
): WorkQueue {
  return new WorkQueue({
    name: 'test',
    reconcile: (key) => Promise.resolve().then(() => reconcile(key)),
    logger: silentLogger(),
    ...opts,
  });
}

void describe('WorkQueue', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
  afterEach(() => mock.timers.reset());

  void it('reconciles a key added many times while waiting only once', async () => {
    const seen: string[] = [];
    const q = queue((key) => void seen.push(key));
    for (let i = 0; i < 5; i++) q.add('a');
    q.add('b');
    q.add('a');
    assert.equal(q.length, 2);
    q.start();
    await q.idle();
    assert.deepEqual(seen, ['a', 'b']);
    await q.stop();
  });

  void it('keeps keys added before start and processes them in arrival order', async () => {
    const seen: string[] = [];
    const q = queue((key) => void seen.push(key));
    q.add('x');
    q.add('y');
    await settle();
    assert.deepEqual(seen, [], 'nothing runs before start()');
    q.start();
    await q.idle();
    assert.deepEqual(seen, ['x', 'y']);
    await q.stop();
  });

  void it('never reconciles a key concurrently with itself, and runs it again if it was added meanwhile', async () => {
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    const first = gate();
    const q = queue(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        runs++;
        if (runs === 1) await first.promise;
        running--;
      },
      { concurrency: 4 },
    );
    q.start();
    q.add('a');
    await settle();
    assert.equal(runs, 1);
    q.add('a'); // while in flight: must wait, then run again
    q.add('a'); // ... once
    await settle();
    assert.equal(runs, 1, 'not started again while the first run is in flight');
    first.open();
    await q.idle();
    assert.equal(runs, 2);
    assert.equal(maxRunning, 1);
    await q.stop();
  });

  void it('runs distinct keys in parallel up to the concurrency', async () => {
    const gates = new Map<string, { promise: Promise<void>; open: () => void }>();
    const q = queue(
      async (key) => {
        const g = gate();
        gates.set(key, g);
        await g.promise;
      },
      { concurrency: 3 },
    );
    q.start();
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) q.add(k);
    await settle();
    assert.deepEqual([...gates.keys()], ['a', 'b', 'c'], 'three in flight, the rest wait');
    assert.equal(q.length, 3);
    gates.get('a')?.open();
    await settle();
    assert.deepEqual([...gates.keys()], ['a', 'b', 'c', 'd'], 'a finished slot is taken by the next key');
    for (const g of gates.values()) g.open();
    await settle();
    for (const g of gates.values()) g.open();
    await q.idle();
    assert.equal(gates.size, 6);
    await q.stop();
  });

  void it('requeues a failing key with per-key exponential backoff, calls onRetry, and forgets on success', async () => {
    const times: number[] = [];
    const retries: [string, number, string][] = [];
    let fail = 4;
    const q = queue(
      () => {
        times.push(Date.now());
        if (fail-- > 0) throw new Error('boom');
      },
      {
        baseDelayMs: 20,
        maxDelayMs: 80,
        onRetry: (key, attempt, err) => retries.push([key, attempt, (err as Error).message]),
      },
    );
    q.start();
    q.add('a');
    await settle();
    for (const ms of [20, 40, 80, 80]) {
      await tick(ms - 1);
      const before = times.length;
      await tick(1);
      assert.equal(times.length, before + 1, `retried exactly ${ms} ms later`);
    }
    const t0 = times[0] as number;
    assert.deepEqual(
      times.map((t) => t - t0),
      [0, 20, 60, 140, 220],
      'delays 20, 40, 80, 80 (capped at max)',
    );
    assert.deepEqual(retries, [
      ['a', 1, 'boom'],
      ['a', 2, 'boom'],
      ['a', 3, 'boom'],
      ['a', 4, 'boom'],
    ]);
    assert.equal(q.numRequeues('a'), 0, 'success forgot the count');

    // The next failure starts from the base delay again.
    fail = 1;
    retries.length = 0;
    q.add('a');
    await settle();
    await tick(20);
    assert.deepEqual(retries, [['a', 1, 'boom']]);
    assert.equal(times.length, 7);
    await q.stop();
  });

  void it('keeps backoff per key: one failing key does not slow another', async () => {
    const seen: string[] = [];
    const q = queue(
      (key) => {
        seen.push(key);
        if (key === 'bad') throw new Error('no');
      },
      { baseDelayMs: 1000 },
    );
    q.start();
    q.add('bad');
    q.add('good');
    await q.idle();
    q.add('good');
    await q.idle();
    assert.deepEqual(seen, ['bad', 'good', 'good']);
    assert.equal(q.numRequeues('bad'), 1);
    assert.equal(q.numRequeues('good'), 0);
    await q.stop();
  });

  void it('treats a synchronous throw like a rejection', async () => {
    let calls = 0;
    const q = new WorkQueue({
      name: 'sync',
      logger: silentLogger(),
      baseDelayMs: 1,
      reconcile: (): Promise<void> => {
        if (calls++ === 0) throw new Error('sync');
        return Promise.resolve();
      },
    });
    q.start();
    q.add('a');
    await settle();
    assert.equal(calls, 1);
    await tick(1);
    assert.equal(calls, 2, 'retried after the base delay');
    await q.stop();
  });

  void it('schedules the key again after requeueAfterMs, once', async () => {
    const times: number[] = [];
    const q = queue(() => {
      times.push(Date.now());
      return times.length === 1 ? { requeueAfterMs: 50 } : {};
    });
    q.start();
    q.add('a');
    await settle();
    await tick(49);
    assert.equal(times.length, 1, 'not before 50 ms');
    await tick(1);
    assert.equal(times.length, 2);
    await tick(10_000);
    assert.equal(times.length, 2, 'no further requeue');
    await q.stop();
  });

  void it('addAfter keeps the earliest due time for a key', async () => {
    const times: number[] = [];
    const q = queue(() => void times.push(Date.now()));
    q.start();
    const t0 = Date.now();
    q.addAfter('a', 200);
    q.addAfter('a', 30); // brought forward
    q.addAfter('a', 500); // later: ignored
    await tick(30);
    assert.deepEqual(
      times.map((t) => t - t0),
      [30],
    );
    await tick(1000);
    assert.equal(times.length, 1, 'one delayed add per key');
    await q.stop();
  });

  void it("addRateLimited / forget / numRequeues behave as client-go's", async () => {
    const times: number[] = [];
    const q = queue(() => void times.push(Date.now()), {
      baseDelayMs: 100,
      maxDelayMs: 1000,
      forgetOnSuccess: false,
    });
    q.start();
    const t0 = Date.now();
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const next = q.backoff('a');
      delays.push(q.addRateLimited('a'));
      assert.equal(delays.at(-1), next, 'backoff() tells the next delay without counting');
      await tick(delays.at(-1) as number);
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000], 'base·2^n, capped');
    assert.equal(times.length, 6, 'each rate-limited add reconciled once, when due');
    assert.equal(times[0]! - t0, 100);
    assert.equal(q.numRequeues('a'), 6, 'successful reconciles do not forget with forgetOnSuccess: false');
    assert.equal(q.numRequeues('b'), 0, 'counts are per key');
    q.forget('a');
    assert.equal(q.numRequeues('a'), 0);
    assert.equal(q.addRateLimited('a'), 100, 'after forget the base delay again');
    await q.stop();
  });

  void it('with jitter, a retry waits a random half to all of its backoff, never less than Retry-After', async () => {
    const draws = [0, 1, 0.5, 0];
    const q = queue(() => undefined, {
      baseDelayMs: 100,
      maxDelayMs: 1000,
      forgetOnSuccess: false,
      jitter: true,
      random: () => draws.shift() ?? 0,
    });
    q.start();
    assert.deepEqual(
      [q.addRateLimited('a'), q.addRateLimited('a'), q.addRateLimited('a')],
      [50, 200, 300],
      'of 100, 200, 400: the half, all, three quarters',
    );
    assert.equal(q.addRateLimited('a', 2000), 1000, 'Retry-After (capped) wins over a shorter jittered wait');
    await q.stop();
  });

  void it('waits at least the Retry-After of a failure, even through adds meanwhile, capped at the max delay', async () => {
    const times: number[] = [];
    let fail = 1;
    const q = queue(
      () => {
        times.push(Date.now());
        // As client-node throws it for a 429 with Retry-After: 1.
        if (fail-- > 0) throw new ApiException(429, 'Too Many Requests', '', { 'retry-after': '1' });
      },
      { baseDelayMs: 5 },
    );
    q.start();
    q.add('a');
    await settle();
    assert.equal(times.length, 1);
    await tick(5);
    assert.equal(times.length, 1, 'not at the 5 ms backoff: the server asked for 1 s');
    q.add('a'); // an event for the key meanwhile
    await tick(500);
    assert.equal(times.length, 1, 'an add() before the Retry-After has passed is held');
    await tick(494);
    assert.equal(times.length, 1);
    await tick(1);
    assert.equal(times.length, 2, 'tried again once the second had passed, and only once');
    await settle();
    q.add('a');
    await settle();
    assert.equal(times.length, 3, 'after the wait, adds reconcile at once again');

    // A Retry-After longer than the cap waits the cap; one shorter than the backoff, the backoff.
    assert.equal(q.addRateLimited('b', 3_600_000), 60_000, 'an hour is capped at maxDelayMs');
    assert.equal(q.addRateLimited('c', 1), 5, 'the backoff stands when it is longer');
    await q.stop();
  });

  void it('an add() while the failing reconcile is still in flight waits for the Retry-After too', async () => {
    const times: number[] = [];
    const g = gate();
    let fail = 1;
    const q = queue(
      async () => {
        times.push(Date.now());
        if (fail-- > 0) {
          await g.promise;
          throw new ApiException(429, 'Too Many Requests', '', { 'retry-after': '1' });
        }
      },
      { baseDelayMs: 5 },
    );
    q.start();
    q.add('a');
    await settle();
    q.add('a'); // an event while the reconcile that will get the 429 is in flight
    g.open();
    await settle();
    assert.equal(times.length, 1, 'the key re-added in flight is not run at once after the 429');
    await tick(999);
    assert.equal(times.length, 1);
    await tick(1);
    assert.equal(times.length, 2, 'tried again once the second had passed, and only once');
    await q.stop();
  });

  void it('stop() waits for reconciles in flight, drops waiting and delayed work and ignores later adds', async () => {
    const g = gate();
    const seen: string[] = [];
    let finished = false;
    const q = queue(async (key) => {
      seen.push(key);
      if (key === 'slow') {
        await g.promise;
        finished = true;
      }
    });
    q.start();
    q.add('slow');
    q.add('waiting');
    q.addAfter('delayed', 10);
    await settle();
    let stopped = false;
    const stopping = q.stop().then(() => (stopped = true));
    await settle();
    assert.equal(stopped, false, 'stop waits for the reconcile in flight');
    g.open();
    await stopping;
    assert.equal(finished, true);
    q.add('late');
    q.addRateLimited('late');
    await tick(1000);
    assert.deepEqual(seen, ['slow']);
    assert.equal(q.length, 0);
    await q.idle();
  });
});
