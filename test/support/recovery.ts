/**
 * The checks after a fault (test/faults.test.ts and bench/soak.ts), made from
 * outside the operator: the requests' status as a user reads it, the API's
 * objects, and the recorder helper's own log (test/support/objects.ts
 * fakeHelper: "start PID MODULE ..." and "end PID MODULE" per exec).
 *
 * - every request reaches a terminal state (Succeeded: the helpers used succeed);
 * - no helper ran without a claim: a request's helper starts never exceed the
 *   attempt its status shows (each attempt is one claim, written before exec);
 * - a second execution only for a run claimed when a process died, and then it
 *   shows as attempt 2; every other run ran exactly once, attempt 1;
 * - no orphans: every helper process that started has exited.
 *
 * Requests of one scenario are named `${prefix}-…`, each with its own module
 * containing `-${prefix}-`, on one node each.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { isTerminal } from '../../src/api/types.ts';
import { eventually } from './cluster.ts';
import { listRequests, listRuns, type FakeHelper } from './objects.ts';

/** Helper starts (pids) by module, from the recorder helper's log. */
export function startsByModule(helper: FakeHelper): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (const line of helper.log()) {
    const [kind, pid, mod] = line.split(' ');
    if (kind !== 'start' || !mod) continue;
    m.set(mod, [...(m.get(mod) ?? []), Number(pid)]);
  }
  return m;
}

/** Modules (containing `-${prefix}-`) with a helper started and not ended, from the helper's own log. */
export function helpersRunning(helper: FakeHelper, prefix: string): Set<string> {
  const running = new Map<string, number>();
  for (const line of helper.log()) {
    const [kind, , mod] = line.split(' ');
    if (!mod?.includes(`-${prefix}-`) || (kind !== 'start' && kind !== 'end')) continue;
    running.set(mod, (running.get(mod) ?? 0) + (kind === 'start' ? 1 : -1));
  }
  return new Set([...running].filter(([, n]) => n > 0).map(([m]) => m));
}

/** Requests named `${prefix}-…` in a terminal phase. */
export async function terminalCount(kc: KubeConfig, prefix: string): Promise<number> {
  return (await listRequests(kc)).filter(
    (r) => r.metadata.name?.startsWith(`${prefix}-`) && isTerminal(r.status?.phase),
  ).length;
}

/** Names of the requests `${prefix}-…` that are not terminal now: work a fault now interrupts. */
export async function outstandingNow(kc: KubeConfig, prefix: string): Promise<Set<string>> {
  return new Set(
    (await listRequests(kc))
      .filter((r) => r.metadata.name?.startsWith(`${prefix}-`) && !isTerminal(r.status?.phase))
      .map((r) => r.metadata.name ?? ''),
  );
}

/**
 * Modules (containing `-${prefix}-`) whose run the API shows claimed and unreported now (on
 * `nodeName`, if given): a process dying now interrupts them.
 */
export async function claimedNow(kc: KubeConfig, prefix: string, nodeName?: string): Promise<Set<string>> {
  return new Set(
    (await listRuns(kc))
      .filter(
        (r) =>
          r.entry.module.includes(`-${prefix}-`) &&
          r.result?.phase === 'Running' &&
          (!nodeName || r.nodeName === nodeName),
      )
      .map((r) => r.entry.module),
  );
}

/** Which runs a fault interrupted, for assertRecovered. */
export interface Interruptions {
  /**
   * Modules claimed when a process died, known exactly (recorded when nothing else was in flight):
   * each must show attempt 2 and have run exactly twice.
   */
  interrupted?: ReadonlySet<string>;
  /**
   * Modules that may have been claimed when a process died (recorded while work was in flight, as
   * bench/soak.ts does): each ran at most twice, attempt at most 2.
   */
  mayBeInterrupted?: ReadonlySet<string>;
  /** How long every request may take to be terminal (default 180 s). */
  timeoutMs?: number;
}

/**
 * Asserts the checks of the module comment for the requests `names`. Every run that is in neither
 * set of `faults` must have run exactly once, as attempt 1.
 */
export async function assertRecovered(
  kc: KubeConfig,
  helper: FakeHelper,
  prefix: string,
  names: string[],
  faults: Interruptions = {},
): Promise<void> {
  const { interrupted = new Set(), mayBeInterrupted = new Set(), timeoutMs = 180_000 } = faults;
  await eventually(
    `all ${names.length} ${prefix} requests terminal`,
    async () => (await terminalCount(kc, prefix)) === names.length,
    timeoutMs,
    500,
  );
  const requests = new Map((await listRequests(kc)).map((r) => [r.metadata.name ?? '', r]));
  const starts = startsByModule(helper);
  for (const name of names) {
    const req = requests.get(name);
    assert.equal(req?.status?.phase, 'Succeeded', `${name}: ${JSON.stringify(req?.status?.conditions)}`);
    const module = req?.spec.module ?? '';
    // The attempt as the request's status shows it to a user.
    const attempt = req?.status?.nodes?.[0]?.attempt ?? 0;
    const ran = starts.get(module)?.length ?? 0;
    assert.ok(ran >= 1, `${module} ran`);
    assert.ok(ran <= attempt, `${module}: ${ran} helper starts but only ${attempt} claim(s)`);
    if (interrupted.has(module)) {
      assert.equal(attempt, 2, `${module} was claimed when the process died: it runs again as attempt 2`);
      assert.equal(ran, 2, `${module}: interrupted once, so its helper ran twice`);
    } else if (mayBeInterrupted.has(module)) {
      assert.ok(attempt <= 2, `${module}: attempt ${attempt} after one interruption`);
    } else {
      assert.equal(attempt, 1, `${module} was not interrupted, yet ran as attempt ${attempt}`);
    }
  }
  const pids = [...starts.entries()].filter(([m]) => m.includes(`-${prefix}-`)).flatMap(([, p]) => p);
  await eventually('no helper process left running', () =>
    pids.every((pid) => {
      const cmdline = `/proc/${pid}/cmdline`;
      return !existsSync(cmdline) || !readFileSync(cmdline, 'utf8').includes(helper.dir);
    }),
  );
}
