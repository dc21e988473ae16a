/**
 * Bounded-parallel dispatch: a fan-out's runs are created several at a time
 * instead of one API call after another. One reconcile of a request over N
 * new nodes used to take N round trips in sequence (issue 10: 1,000 nodes in
 * 89.9 s); with a bound of K in flight it takes about N / K, while the bound
 * keeps one big fan-out from flooding the API server's inflight limit
 * (--max-mutating-requests-inflight, 200 by default) and starving everyone
 * else, the agents' claims and results included.
 */

/** Runs created at once per reconcile: well under the API server's default mutating inflight limit. */
export const DISPATCH_CONCURRENCY = 16;

/** What one call came to: its value, or the error it threw (nothing is thrown past settleBounded). */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/**
 * Calls `fn` on every item, at most `limit` at once, and resolves with the
 * outcomes in the order of `items` once all have settled. Never rejects: a
 * failure is an outcome, so one refused create does not hide the others.
 */
export async function settleBounded<I, T>(
  items: readonly I[],
  limit: number,
  fn: (item: I) => Promise<T>,
): Promise<Settled<T>[]> {
  if (!Number.isInteger(limit) || limit < 1)
    throw new RangeError(`limit must be a whole number >= 1, got ${limit}`);
  const out = new Array<Settled<T>>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { ok: true, value: await fn(items[i] as I) };
      } catch (error) {
        out[i] = { ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
