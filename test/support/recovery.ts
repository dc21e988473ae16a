/**
 * The checks after a fault (test/faults.test.ts and bench/soak.ts), made from
 * outside the operator: the API's objects and the recorder helper's own log
 * (test/support/objects.ts fakeHelper: "start PID MODULE ..." per exec).
 *
 * - every request reaches a terminal state (Succeeded: the helpers used succeed);
 * - no helper ran without a claim: a run's helper starts never exceed its
 *   attempt count (each attempt is one claim, written before exec);
 * - a second execution only for a run claimed when a process died
 *   (`interrupted`), and then it shows as attempt 2; every other run ran
 *   exactly once, attempt 1, and the request shows the run's attempt;
 * - no orphans: every helper process that started has exited.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import type { KubeConfig } from '@kubernetes/client-node';
import { isTerminal } from '../../src/api/types.ts';
import { eventually } from './cluster.ts';
import { listRequests, listRuns, type FakeHelper, type NodeRun } from './objects.ts';

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

/** Requests named `${prefix}-…` in a terminal phase. */
export async function terminalCount(kc: KubeConfig, prefix: string): Promise<number> {
  return (await listRequests(kc)).filter(
    (r) => r.metadata.name?.startsWith(`${prefix}-`) && isTerminal(r.status?.phase),
  ).length;
}

/** Modules (containing `-${prefix}-`) whose run is claimed and unreported now: a process dying now interrupts them. */
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

/**
 * Asserts the checks of the module comment for the requests `names` (all
 * named `${prefix}-…`, each with its own module containing `-${prefix}-`).
 * Waits up to `timeoutMs` for every request to be terminal.
 */
export async function assertRecovered(
  kc: KubeConfig,
  helper: FakeHelper,
  prefix: string,
  names: string[],
  interrupted = new Set<string>(),
  timeoutMs = 180_000,
): Promise<void> {
  await eventually(
    `all ${names.length} ${prefix} requests terminal`,
    async () => (await terminalCount(kc, prefix)) === names.length,
    timeoutMs,
    500,
  );
  const requests = new Map((await listRequests(kc)).map((r) => [r.metadata.name ?? '', r]));
  const runs = new Map<string, NodeRun>(
    (await listRuns(kc))
      .filter((r) => r.entry.module.includes(`-${prefix}-`))
      .map((r) => [r.entry.module, r]),
  );
  const starts = startsByModule(helper);
  for (const name of names) {
    const req = requests.get(name);
    assert.equal(req?.status?.phase, 'Succeeded', `${name}: ${JSON.stringify(req?.status?.conditions)}`);
    const module = req?.spec.module ?? '';
    const attempt = runs.get(module)?.result?.attempt ?? 0;
    const ran = starts.get(module)?.length ?? 0;
    assert.ok(ran >= 1, `${module} ran`);
    assert.ok(ran <= attempt, `${module}: ${ran} helper starts but only ${attempt} claim(s)`);
    if (interrupted.has(module))
      assert.ok(attempt <= 2, `${module}: attempt ${attempt} after one interruption`);
    else assert.equal(attempt, 1, `${module} was not interrupted, yet ran as attempt ${attempt}`);
    assert.equal(req?.status?.nodes?.[0]?.attempt, attempt, `${name} shows the run's attempt`);
  }
  const pids = [...starts.entries()].filter(([m]) => m.includes(`-${prefix}-`)).flatMap(([, p]) => p);
  await eventually('no helper process left running', () =>
    pids.every((pid) => {
      const cmdline = `/proc/${pid}/cmdline`;
      return !existsSync(cmdline) || !readFileSync(cmdline, 'utf8').includes(helper.dir);
    }),
  );
}
