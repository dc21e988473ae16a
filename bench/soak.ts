/**
 * `make soak`: a steady stream of requests for SOAK_SECONDS (default 600)
 * over SOAK_NODES simulated nodes (default 3), with faults injected at random
 * every SOAK_FAULT_SECONDS (default 30): an agent process SIGKILLed and
 * restarted, a controller replica SIGKILLed and restarted (two replicas with
 * leader election), kube-apiserver or etcd SIGKILLed and restarted. Seeded
 * (SOAK_SEED, default 1): the same seed gives the same sequence of requests
 * and faults (the system's timing is the machine's). Prints what it did, then
 * makes the same checks as test/faults.test.ts (test/support/recovery.ts)
 * and exits non-zero if one fails. `make test` runs it for 8 s only
 * (test/bench.test.ts).
 */
import { KubeConfig } from '@kubernetes/client-node';
import { startControlPlane } from '../src/cluster/controlplane.ts';
import { installCrds } from '../src/kube/crds.ts';
import { createRequest, ensureNode, fakeHelper } from '../test/support/objects.ts';
import { assertRecovered, claimedNow } from '../test/support/recovery.ts';
import { startAgentProcess, startControllerProcess, stopComponent, type Component } from './support.ts';

/** A setting: whole numbers ≥ `min` only (a typo must not become NaN: a soak that never ends or never faults). */
function setting(name: string, fallback: number, min = 1): number {
  const value = process.env[name] ?? String(fallback);
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`${name} must be a whole number ≥ ${min}, got '${value}'`);
  return n;
}
const seconds = setting('SOAK_SECONDS', 600);
const seed = setting('SOAK_SEED', 1, 0);
const nodeCount = setting('SOAK_NODES', 3);
const faultEvery = setting('SOAK_FAULT_SECONDS', 30);
const intervalMs = setting('SOAK_INTERVAL_MS', 500);

/** mulberry32: a small seeded PRNG, so a seed replays the same choices. */
function prng(s: number): () => number {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(seed);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;

const FAULTS = ['kill-agent', 'kill-controller', 'restart-apiserver', 'restart-etcd'] as const;
const t0 = Date.now();
const log = (msg: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

const cp = await startControlPlane({
  controllerManager: false,
  apiServerFlags: ['--watch-cache=false', '--etcd-compaction-interval=1s'],
});
const leArgs = ['--leader-elect', '--leader-election-namespace=default'];
let failed = false;
const agents = new Map<string, Component>();
const controllers: Component[] = [];
try {
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  await installCrds(kc);
  const helper = fakeHelper();
  const nodes = Array.from({ length: nodeCount }, (_, i) => `soak-${i}`);
  for (const n of nodes) {
    await ensureNode(kc, n);
    agents.set(n, await startAgentProcess(cp, n, helper.path));
  }
  controllers.push(await startControllerProcess(cp, leArgs), await startControllerProcess(cp, leArgs));
  log(
    `seed ${seed}: ${seconds} s, ${nodes.length} nodes, a request every ${intervalMs} ms, a fault every ${faultEvery} s`,
  );

  const names: string[] = [];
  const interrupted = new Set<string>();
  const done: Record<string, number> = {};
  const start = Date.now();
  let nextFault = start + faultEvery * 1000;
  while (Date.now() - start < seconds * 1000) {
    const i = names.length;
    const node = pick(nodes);
    // One in four is slow (1 s), so faults find helpers running.
    const module = rand() < 0.25 ? `slow-soak-${i}` : `ok-soak-${i}`;
    await createRequest(kc, `soak-${i}`, {
      module,
      nodeName: node,
      ...(module.startsWith('slow') ? { parameters: ['secs=1'] } : {}),
    });
    names.push(`soak-${i}`);
    if (Date.now() >= nextFault) {
      nextFault += faultEvery * 1000;
      const fault = pick(FAULTS);
      done[fault] = (done[fault] ?? 0) + 1;
      if (fault === 'kill-agent') {
        const victim = pick(nodes);
        agents.get(victim)?.child.kill('SIGKILL');
        await agents.get(victim)?.exited;
        // What the dead agent had claimed may run again, as attempt 2.
        const claimed = await claimedNow(kc, 'soak', victim);
        for (const m of claimed) interrupted.add(m);
        agents.set(victim, await startAgentProcess(cp, victim, helper.path));
        // A claim sent just before the kill may land after the first look; the restarted agent has
        // re-claimed every interrupted run by the time it is ready, so look again.
        for (const m of await claimedNow(kc, 'soak', victim)) interrupted.add(m);
        log(`fault: agent of ${victim} SIGKILLed (${claimed.size} claimed runs) and restarted`);
      } else if (fault === 'kill-controller') {
        const k = Math.floor(rand() * controllers.length);
        controllers[k]?.child.kill('SIGKILL');
        await controllers[k]?.exited;
        controllers[k] = await startControllerProcess(cp, leArgs);
        log(`fault: controller replica ${k} SIGKILLed and restarted`);
      } else {
        const component = fault === 'restart-etcd' ? 'etcd' : 'kube-apiserver';
        await cp.restart(component, { kill: true });
        log(`fault: ${component} SIGKILLed and restarted`);
      }
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  log(`stream over: ${names.length} requests; faults ${JSON.stringify(done)}; checking`);
  try {
    await assertRecovered(kc, helper, 'soak', names, { mayBeInterrupted: interrupted, timeoutMs: 600_000 });
    const twice = [...interrupted].length;
    log(
      `OK: all ${names.length} requests Succeeded; ${twice} run(s) interrupted by an agent kill (attempt ≤ 2); no helper ran without a claim; no orphans`,
    );
  } catch (err) {
    failed = true;
    log(`FAILED: ${(err as Error).message}`);
  }
} finally {
  for (const c of [...agents.values(), ...controllers]) await stopComponent(c);
  await cp.stop();
}
process.exitCode = failed ? 1 : 0;
