import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../observability/logger.ts';
import { WorkQueue, type ReconcileResult, type WorkQueueOptions } from './workqueue.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    await sleep(10);
    assert.deepEqual(seen, []);
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
    await sleep(5);
    assert.equal(runs, 1);
    q.add('a'); // while in flight: must wait, then run again
    q.add('a'); // ... once
    await sleep(10);
    assert.equal(runs, 1, 'not started again while the first run is in flight');
    first.open();
    await q.idle();
    assert.equal(runs, 2);
    assert.equal(maxRunning, 1);
    await q.stop();
  });

  void it('runs distinct keys in parallel up to the concurrency', async () => {
    let running = 0;
    let maxRunning = 0;
    const q = queue(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await sleep(20);
        running--;
      },
      { concurrency: 3 },
    );
    q.start();
    for (const k of ['a', 'b', 'c', 'd', 'e', 'f']) q.add(k);
    await q.idle();
    assert.equal(maxRunning, 3);
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
    const deadline = Date.now() + 5000;
    while (times.length < 5 && Date.now() < deadline) await sleep(5);
    assert.equal(times.length, 5);
    assert.deepEqual(retries, [
      ['a', 1, 'boom'],
      ['a', 2, 'boom'],
      ['a', 3, 'boom'],
      ['a', 4, 'boom'],
    ]);
    // Delays 20, 40, 80, 80 (capped); timers may fire late, never early.
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    [20, 40, 80, 80].forEach((want, i) =>
      assert.ok((gaps[i] as number) >= want - 2, `gap ${i} ${gaps[i]} >= ${want}`),
    );
    assert.ok((gaps[3] as number) < 80 + 60, `capped at max: ${gaps[3]}`);

    // Success forgot the count: the next failure starts from the base delay again.
    fail = 1;
    retries.length = 0;
    q.add('a');
    while (times.length < 7 && Date.now() < deadline + 2000) await sleep(5);
    assert.deepEqual(retries, [['a', 1, 'boom']]);
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
    const deadline = Date.now() + 2000;
    while (calls < 2 && Date.now() < deadline) await sleep(2);
    assert.equal(calls, 2);
    await q.stop();
  });

  void it('schedules the key again after requeueAfterMs', async () => {
    const times: number[] = [];
    const q = queue(() => {
      times.push(Date.now());
      return times.length === 1 ? { requeueAfterMs: 50 } : {};
    });
    q.start();
    q.add('a');
    const deadline = Date.now() + 2000;
    while (times.length < 2 && Date.now() < deadline) await sleep(5);
    assert.equal(times.length, 2);
    assert.ok((times[1] as number) - (times[0] as number) >= 48);
    await sleep(80);
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
    await sleep(100);
    assert.equal(times.length, 1);
    assert.ok((times[0] as number) - t0 < 150);
    await sleep(500);
    assert.equal(times.length, 1, 'one delayed add per key');
    await q.stop();
  });

  void it('stop() waits for reconciles in flight, drops waiting work and ignores later adds', async () => {
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
    await sleep(5);
    let stopped = false;
    const stopping = q.stop().then(() => (stopped = true));
    await sleep(20);
    assert.equal(stopped, false, 'stop waits for the reconcile in flight');
    g.open();
    await stopping;
    assert.equal(finished, true);
    q.add('late');
    await sleep(30);
    assert.deepEqual(seen, ['slow']);
    assert.equal(q.length, 0);
    await q.idle();
  });
});
