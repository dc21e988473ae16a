import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeModules, NodeModulesRequest, NodeModulesResult } from '../api/types.ts';
import type { JsonPatchOp } from '../kube/resources.ts';
import { silentLogger } from '../observability/logger.ts';
import { composeStatus, retryDelay, StatusReporter, summarizeNode } from './reporter.ts';
import { AgentRuns } from './runs.ts';

const entry = (i: number, generation = 1): NodeModulesRequest => ({
  name: `r${i}`,
  uid: `u${i}`,
  generation,
  module: `m${i}`,
  wait: 'Process',
  timeoutSeconds: 60,
});
const result = (i: number, over: Partial<NodeModulesResult> = {}): NodeModulesResult => ({
  name: `r${i}`,
  uid: `u${i}`,
  observedGeneration: 1,
  phase: 'Succeeded',
  reason: 'Completed',
  attempt: 1,
  claimedBy: 'me',
  bootID: 'b1',
  ...over,
});
const object = (requests: NodeModulesRequest[], status?: NodeModules['status'], rv = '10'): NodeModules => ({
  metadata: { name: 'n1', uid: 'obj-1', generation: 3, resourceVersion: rv },
  spec: { bootID: 'b1', requests },
  ...(status ? { status } : {}),
});

/** A fake API server holding one NodeModules: JSON patch with `test` (RFC 6902 semantics the API server uses). */
function fakeServer(initial: NodeModules) {
  let stored = structuredClone(initial);
  const writes: JsonPatchOp[][] = [];
  let failNext: Error | undefined;
  let applied: Array<() => void> = [];
  return {
    writes,
    /** Resolves once the next write is applied (not refused). */
    nextApplied: () => new Promise<void>((resolve) => applied.push(resolve)),
    get stored() {
      return stored;
    },
    set(o: NodeModules) {
      stored = structuredClone(o);
    },
    failNext(err: Error) {
      failNext = err;
    },
    resources: {
      getNodeModules: () => Promise.resolve(structuredClone(stored)),
      patchNodeModulesStatus: (_name: string, ops: JsonPatchOp[]) => {
        writes.push(ops);
        if (failNext) {
          const e = failNext;
          failNext = undefined;
          return Promise.reject(e);
        }
        for (const op of ops) {
          if (op.op !== 'test') continue;
          const [, a, b] = op.path.split('/');
          const v =
            b === undefined
              ? (stored as unknown as Record<string, unknown>)[a ?? '']
              : ((stored as unknown as Record<string, Record<string, unknown> | undefined>)[a ?? ''] ?? {})[
                  b
                ];
          if ((v ?? null) !== op.value)
            return Promise.reject(Object.assign(new Error('test failed'), { code: 422 }));
        }
        const add = ops.find((o) => o.op === 'add');
        stored = { ...stored, status: structuredClone(add?.value) as NodeModules['status'] };
        stored.metadata = {
          ...stored.metadata,
          resourceVersion: String(Number(stored.metadata.resourceVersion) + 1),
        };
        const waiting = applied;
        applied = [];
        waiting.forEach((resolve) => resolve());
        return Promise.resolve(structuredClone(stored));
      },
    },
  };
}

const reporter = (server: ReturnType<typeof fakeServer>, runs: AgentRuns, instanceId = 'me') =>
  new StatusReporter({
    resources: server.resources,
    nodeName: 'n1',
    instanceId,
    runs,
    logger: silentLogger(),
    backoff: { baseMs: 1, maxMs: 5 },
  });

test('summary: counts over the spec; a result of another generation or boot is pending; the last failure in one line', () => {
  const spec = [entry(1), entry(2), entry(3), entry(4, 2), entry(5)];
  const results = new Map<string, NodeModulesResult>([
    ['u1', result(1)],
    [
      'u2',
      result(2, {
        phase: 'Failed',
        reason: 'ExitCode',
        message: 'modprobe: FATAL\nmore',
        finishTime: '2026-01-01T00:00:02Z',
      }),
    ],
    ['u3', result(3, { phase: 'Running' })],
    ['u4', result(4)],
    ['u5', result(5, { bootID: 'b0' })],
  ]);
  const { summary, lastFailure } = summarizeNode(spec, (uid) => results.get(uid), 'b1');
  assert.deepEqual(summary, { requests: 5, succeeded: 1, failed: 1, pending: 3, running: 1 });
  assert.equal(lastFailure, 'r2: ExitCode: modprobe: FATAL');
});

test('the status holds results in spec order, only for requests in the spec', () => {
  const nm = object([entry(2), entry(1)]);
  const s = composeStatus(
    nm,
    (uid) => (uid === 'u9' ? result(9) : uid === 'u1' ? result(1) : result(2)),
    'me',
  );
  assert.deepEqual(
    s.results?.map((r) => r.uid),
    ['u2', 'u1'],
  );
  assert.equal(s.agent, 'me');
  assert.equal(s.observedGeneration, 3);
});

test('writes coalesce: changes made while a write is in flight go out together in the next', async () => {
  const server = fakeServer(object([entry(1), entry(2), entry(3)]));
  const runs = new AgentRuns();
  const rep = reporter(server, runs);
  rep.adopt(server.stored);
  runs.report('u1', result(1, { phase: 'Running' }));
  const first = rep.flush();
  runs.report('u2', result(2, { phase: 'Running' }));
  const second = rep.flush();
  runs.report('u3', result(3, { phase: 'Running' }));
  const third = rep.flush();
  await Promise.all([first, second, third]);
  assert.equal(server.writes.length, 2, 'one in flight, then one for everything after');
  assert.deepEqual(
    server.stored.status?.results?.map((r) => r.uid),
    ['u1', 'u2', 'u3'],
  );
  assert.ok([...runs.all()].every((r) => !r.dirty));
  assert.deepEqual(server.writes[0]?.slice(0, 2), [
    { op: 'test', path: '/metadata/uid', value: 'obj-1' },
    { op: 'test', path: '/status', value: null },
  ]);
  assert.deepEqual(server.writes[1]?.[1], { op: 'test', path: '/status/agent', value: 'me' });
});

test('a status another agent process wrote: the write fails once, the newer claim per request wins, then it writes', async () => {
  const server = fakeServer(
    object([entry(1), entry(2)], {
      agent: 'old',
      results: [result(1, { claimedBy: 'old', phase: 'Running' })],
    }),
  );
  const runs = new AgentRuns();
  const rep = reporter(server, runs);
  rep.adopt(server.stored);
  // Meanwhile a third process claimed request 1 again (attempt 2) and wrote.
  server.set(
    object([entry(1), entry(2)], {
      agent: 'other',
      results: [result(1, { claimedBy: 'other', phase: 'Running', attempt: 2 })],
    }),
  );
  runs.report('u1', result(1, { phase: 'Running', attempt: 2, claimedBy: 'me' }), {
    uid: 'u1',
    generation: 1,
    attempt: 2,
    takesOverFrom: 'old',
  });
  runs.report('u2', result(2, { phase: 'Running', claimedBy: 'me' }));
  await rep.flush();
  assert.equal(server.writes.length, 2);
  const stored = new Map(server.stored.status?.results?.map((r) => [r.uid, r]));
  assert.equal(stored.get('u1')?.claimedBy, 'other', 'its claim of the same attempt stands');
  assert.equal(stored.get('u2')?.claimedBy, 'me');
  assert.equal(runs.get('u1')?.result?.claimedBy, 'other', 'the run learns it lost');
  assert.equal(server.stored.status?.agent, 'me');
});

test('a failed write is retried by itself while something is unwritten; the flush that saw it fails rejects', async () => {
  const server = fakeServer(object([entry(1)]));
  const runs = new AgentRuns();
  const rep = reporter(server, runs);
  rep.adopt(server.stored);
  server.failNext(Object.assign(new Error('etcd timeout'), { code: 500 }));
  runs.report('u1', result(1));
  const retried = server.nextApplied();
  await assert.rejects(rep.flush(), /etcd timeout/);
  assert.equal(runs.get('u1')?.dirty, true);
  await retried;
  assert.equal(
    server.stored.status?.results?.[0]?.phase,
    'Succeeded',
    'written by the retry, nobody asked again',
  );
  rep.stop();
});

test('a request that left the spec leaves the status at the next write', async () => {
  const server = fakeServer(object([entry(1), entry(2)]));
  const runs = new AgentRuns();
  const rep = reporter(server, runs);
  rep.adopt(server.stored);
  runs.report('u1', result(1));
  runs.report('u2', result(2));
  await rep.flush();
  rep.observe(object([entry(2)], server.stored.status, '20'));
  await rep.flush();
  assert.deepEqual(
    server.stored.status?.results?.map((r) => r.uid),
    ['u2'],
  );
  assert.equal(server.stored.status?.summary?.requests, 1);
  rep.stop();
});

test('retry delays: exponential, capped, a random half to all of it (equal jitter), at least Retry-After', () => {
  const at = (r: number) => () => r;
  assert.deepEqual(
    [1, 2, 3, 4, 8].map((n) => retryDelay(500, 30_000, n, undefined, at(1))),
    [500, 1000, 2000, 4000, 30_000],
  );
  assert.equal(retryDelay(500, 30_000, 3, undefined, at(0)), 1000, 'never less than half the backoff');
  assert.equal(retryDelay(500, 30_000, 1, 5000, at(0)), 5000, 'the server asked for 5 s');
  assert.equal(retryDelay(500, 30_000, 1, 90_000, at(0)), 30_000, 'capped');
  const spread = new Set(
    Array.from({ length: 50 }, () => retryDelay(500, 30_000, 3, undefined, Math.random)),
  );
  assert.ok(spread.size > 10, `agents failing together retry apart (${spread.size} distinct delays of 50)`);
});
