/**
 * `make bench`: the operator against its floor, on the real local control
 * plane. Prints a table and writes bench/results.json (one object per
 * scenario). The controller and the agents run as their own processes, so
 * their RSS and CPU time (from /proc) are theirs alone; the writes are the
 * API server's own apiserver_request_total, so nothing depends on what the
 * operator says about itself.
 *
 * The floor of a scenario is measured in the same run, while the operator's
 * controller is stopped (before it by default, after it with
 * BENCH_ORDER=operator-first; bench/repeat.ts alternates), by bare clients doing what an ideal design cannot avoid, at the same
 * concurrency (bench/floor.ts): the user creates the request → the
 * controller's unscoped watch delivers it → the controller writes the node's
 * object → its agent's name-scoped watch delivers it → claim → one helper
 * spawn through the real setpriv chain → result → the controller's unscoped
 * watch delivers it → request status; the floor's agents run in processes of
 * the operator's simulated agents' size (bench/floor-agents.ts). Both sides'
 * times end when this bench's own watch of requests sees the request terminal. Each scenario and each floor
 * starts with the machine at rest (support.ts settle), and the floors with a
 * warm API server (a warm-up fan-out over 200 names and 200 one-node requests,
 * not measured). Simulated nodes' agents run in bench/agents.ts processes of
 * BENCH_AGENTS_PER_PROCESS (250) agents each, with the Dockerfile's node flags.
 *
 * Scenarios (sizes: BENCH_SCALE=small|full, each overridable):
 *   sequential        1 node, BENCH_SEQ requests one after another (full 40, small 10)
 *   many              BENCH_REQUESTS requests over BENCH_NODES nodes, submitted at once (1000/100; small 100/10)
 *   fanout            one request over BENCH_FANOUT nodes (comma list; full 200,1000; small 50)
 *   burst             BENCH_BURST runs on one node, 1 s helpers, cap 50 (full 200, small 100)
 *   dryrun-burst      BENCH_DRYRUNS dry-run requests at once on one node whose agent (a standalone
 *                     `kmod-operator agent`) resolves against a realistic module tree (BENCH_TREE_MODULES
 *                     modules with 100 aliases each; real modprobe), while BENCH_LOADS real loads run
 *                     one after another on that node: all complete? the agent's process tree's peak
 *                     RSS against the chart's 384 MiB limit; the loads' latency against the same loads
 *                     without the burst (500/300/20 at both scales)
 *   agent-idle        a standalone `kmod-operator agent` process, idle: RSS, CPU
 *   controller-memory the controller with BENCH_STORED requests stored, 100 per node (full 10000, small 1000)
 * BENCH_AGENTS_PER_PROCESS: simulated agents per bench/agents.ts process, and the floor's agents per
 *   bench/floor-agents.ts process (default 250).
 * BENCH_ORDER: floor-first (default) or operator-first, which side of the scenarios with a floor runs
 *   first; the row's machine.order says which.
 * BENCH_CONTROLLER_ARGS: flags added to the controller's command line (space-separated).
 * BENCH_ONLY=name,name runs a subset. Targets are read from the table, not asserted.
 * BENCH_RESULTS=path writes the results there instead of bench/results.json
 * BENCH_MERGE=1 replaces only this run's rows in the results file (each with this run's machine),
 * keeping the others: a row measured alone joins the committed full run.
 * BENCH_BEFORE=path: the dryrun-burst row carries, as `before`, that file's dryrun-burst figures
 * (measured on an earlier tree with this bench file; BENCH_MODPROBE_ARGS_FLAG=--resolver-args
 * gives such a tree's agent its modprobe flags under the old flag's name).
 * (test/bench.test.ts, so that a test run leaves the committed figures alone).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import {
  GROUP,
  NODE_MODULES_PLURAL,
  REQUEST_PLURAL,
  VERSION,
  isTerminal,
  type ModuleRequest,
  type NodeModules,
} from '../src/api/types.ts';
import { ensureBinaries, startControlPlane } from '../src/cluster/controlplane.ts';
import { mergePatch } from '../src/kube/callopts.ts';
import { installCrds } from '../src/kube/crds.ts';
import { reuseConnections } from '../src/kube/connections.ts';
import { buildModuleTree, demoResolver } from '../src/local/demo.ts';
import { Floor } from './floor.ts';
import { createRequest as createModuleRequest, ensureNode } from '../test/support/objects.ts';
import {
  apiserverCpuSeconds,
  apiserverState,
  apiserverWriteCounts,
  inParallel,
  percentile,
  profileApiserver,
  procStats,
  projectRoot,
  settle,
  settledWrites,
  startAgentHosts,
  startAgentProcess,
  startControllerProcess,
  stopComponent,
  treeRss,
  watchObjects,
  writesBetween,
  type AgentHostOptions,
  type ApiserverState,
  type Component,
  type WriteCounts,
} from './support.ts';

const full = process.env.BENCH_SCALE === 'full';
if (![undefined, 'small', 'full'].includes(process.env.BENCH_SCALE))
  throw new Error(`BENCH_SCALE must be small or full, got '${process.env.BENCH_SCALE}'`);
/** A size: positive whole numbers only (a typo must not become NaN and a bench that never ends). */
const count = (name: string, value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`${name} must be a positive whole number, got '${value}'`);
  return n;
};
const num = (name: string, small: number, big: number) =>
  count(name, process.env[name] ?? String(full ? big : small));
const resultsPath = resolve(process.env.BENCH_RESULTS || join(projectRoot, 'bench/results.json'));
const sizes = {
  sequential: num('BENCH_SEQ', 10, 40),
  requests: num('BENCH_REQUESTS', 100, 1000),
  nodes: num('BENCH_NODES', 10, 100),
  fanout: (process.env.BENCH_FANOUT ?? (full ? '200,1000' : '50'))
    .split(',')
    .map((v) => count('BENCH_FANOUT', v)),
  burst: num('BENCH_BURST', 100, 200),
  dryRuns: num('BENCH_DRYRUNS', 500, 500),
  treeModules: num('BENCH_TREE_MODULES', 300, 300),
  loads: num('BENCH_LOADS', 20, 20),
  stored: num('BENCH_STORED', 1000, 10_000),
};
/** Writes the API server makes on its own (its lease, the kubernetes Service's endpoints), not the operator's. */
const HOUSEKEEPING = new Set(['leases', 'endpoints', 'endpointslices']);
/** In-flight creates when requests are "submitted at once" (client and floor alike). */
const SUBMIT_CONCURRENCY = 50;
/** BENCH_CONTROLLER_ARGS: flags added to `kmod-operator controller` (space-separated), e.g. `--node-concurrency=32`. */
const controllerArgs = (process.env.BENCH_CONTROLLER_ARGS ?? '').split(' ').filter(Boolean);
/**
 * BENCH_ORDER: which side of the scenarios with a floor runs first, `floor-first` (the default) or
 * `operator-first`; bench/repeat.ts alternates them.
 */
const ORDER = process.env.BENCH_ORDER ?? 'floor-first';
if (!['floor-first', 'operator-first'].includes(ORDER))
  throw new Error(`BENCH_ORDER must be floor-first or operator-first, got '${ORDER}'`);
/**
 * BENCH_PPROF: a directory; each fan-out's side (`fanout-N.pb.gz`, `floor-fanout-N.pb.gz`) gets a
 * CPU profile of kube-apiserver, BENCH_PPROF_SECONDS long (default 120) from just before the
 * create, for `go tool pprof -top -cum`. Each fan-out then waits for its profile to end.
 */
const pprofDir = process.env.BENCH_PPROF ? resolve(process.env.BENCH_PPROF) : undefined;
const pprofSeconds = count('BENCH_PPROF_SECONDS', process.env.BENCH_PPROF_SECONDS ?? '120');
const only = new Set((process.env.BENCH_ONLY ?? '').split(',').filter(Boolean));
const wanted = (name: string) => only.size === 0 || only.has(name);

/** One row of results.json (exported for test/bench.test.ts, which checks the rows against it). */
export interface Result {
  name: string;
  sizes: Record<string, number>;
  wallSeconds: number;
  /** Fan-out: from the create until every run exists (the controller's dispatch alone). */
  dispatchSeconds?: number;
  /** Fan-out: the API server's live heap and goroutines just before the create (support.ts apiserverState). */
  apiserverAtStart?: ApiserverState;
  p50Ms?: number;
  p99Ms?: number;
  floor?: {
    wallSeconds: number;
    p50Ms?: number;
    p99Ms?: number;
    apiserverCpuSeconds?: number;
    /** Fan-out: the floor's own dispatch time, measured with the same clock. */
    dispatchSeconds?: number;
    apiserverAtStart?: ApiserverState;
  };
  /** Operator ÷ floor: wall time, and p50/p99 where there are latencies. */
  ratio?: { wall: number; p50?: number; p99?: number };
  /** Writes the API server served per (request, node), the user's create of the request left out. */
  writesPerRequestNode?: number;
  writesByResource?: WriteCounts;
  /** Of those, the ones the API server refused, by resource and HTTP code (retried by the operator). */
  writesRefused?: WriteCounts;
  floorWritesPerRequestNode?: number;
  controller?: { rssMiB: number; peakRssMiB: number; cpuSeconds: number };
  agents?: { rssMiB: number; peakRssMiB: number; cpuSeconds: number; processes: string };
  /** CPU seconds kube-apiserver used during the scenario (it shares the machine's cores). */
  apiserverCpuSeconds?: number;
  /** A row measured alone and merged in (BENCH_MERGE): the machine it ran on. */
  machine?: Record<string, unknown>;
  /** dryrun-burst with BENCH_BEFORE: the same row measured on an earlier tree. */
  before?: Pick<Result, 'wallSeconds' | 'agents' | 'dryRuns' | 'notes'>;
  /** dryrun-burst: how the dry runs ended, the agent's memory, the real loads' latency. */
  dryRuns?: {
    completed: number;
    byReason: Record<string, number>;
    /** The first message of each reason (cut to 300 characters). */
    examples: Record<string, string>;
    /** Peak RSS of the agent process and every process below it (what its container's limit counts). */
    peakTreeRssMiB: number;
    /** Most processes below the agent at once (modprobe questions in flight). */
    peakChildren: number;
    limitMiB: number;
    /** The real loads' latency alone, and while the dry runs resolve. */
    loadsAloneP50Ms: number;
    loadsAloneP95Ms: number;
    loadsDuringP50Ms: number;
    loadsDuringP95Ms: number;
    /** The agent's part of the loads during the burst: from the run's creation to its result. */
    loadsDuringAgentP50Ms: number;
    loadsDuringAgentP95Ms: number;
  };
  goal: string;
  notes?: string;
}

const dir = mkdtempSync(join(tmpdir(), 'kmod-bench-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
const sleeper = join(dir, 'sleep1');
writeFileSync(sleeper, '#!/bin/sh\nsleep 1\n');
chmodSync(sleeper, 0o755);

const cp = await startControlPlane({ controllerManager: false });
const results: Result[] = [];
let controller: Component | undefined;
try {
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  // The floor's bare client reuses its connections as the operator does (src/kube/connections.ts):
  // a handshake per call would make the floor slower than a good client, and the ratio flatter.
  reuseConnections(kc);
  await installCrds(kc);
  const api = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);

  const bootID = (name: string) => `${name}-boot-1`;
  const makeNodes = async (names: string[], labels: Record<string, string> = {}) =>
    inParallel(names, 20, (name) => ensureNode(kc, name, labels, bootID(name)));
  const createRequest = (name: string, spec: ModuleRequest['spec']) => createModuleRequest(kc, name, spec);
  const deleteAll = async () => {
    for (const plural of [REQUEST_PLURAL, NODE_MODULES_PLURAL])
      await api.deleteCollectionClusterCustomObject({ group: GROUP, version: VERSION, plural });
  };

  /** Before a scenario's measured part: the machine at rest (support.ts settle); says when it did not get there. */
  const atRest = async (what: string, pids: number[]) => {
    const s = await settle(cp, pids);
    if (!s.settled)
      console.error(
        `${what}: still ${s.cores.toFixed(2)} cores busy after ${s.waitedMs} ms; measuring anyway`,
      );
  };

  // ---- The floor: what an ideal design cannot avoid, by a bare client (bench/floor.ts). ----
  /** Runs `fn` with the floor's agents of `nodes` running and its controller's watch open. */
  const withFloor = async <T>(nodes: string[], fn: (floor: Floor) => Promise<T>): Promise<T> => {
    const floor = new Floor(kc, cp);
    try {
      await floor.start(nodes);
      await atRest('floor', floor.pids);
      return await fn(floor);
    } finally {
      await floor.close();
    }
  };
  /** Runs `fn` and counts the API server's writes it caused. */
  const counted = async <T>(
    fn: () => Promise<T>,
  ): Promise<{ value: T; writes: WriteCounts; refused: WriteCounts }> => {
    const before = await apiserverWriteCounts(cp);
    const value = await fn();
    const writes = writesBetween(before.writes, await settledWrites(cp));
    const refused = writesBetween(before.refused, (await apiserverWriteCounts(cp)).refused);
    return { value, writes, refused };
  };
  /** The operator's writes (the API server's own lease and endpoints upkeep left out), less the user's creates. */
  const total = (w: WriteCounts, leaveOutUserCreates: number) =>
    Object.entries(w)
      .filter(([k]) => !HOUSEKEEPING.has(k))
      .reduce((a, [, b]) => a + b, 0) - leaveOutUserCreates;

  const floors = new Map<
    string,
    { wallSeconds: number; p50Ms?: number; p99Ms?: number; writes: number; apiserverCpuSeconds: number }
  >();
  // ---- The instrument: when each request turns terminal, as a watcher of requests sees it. ----
  // It runs for the floors too, so both sides' times end the same way (an event on a watch, not a
  // write's response) and both carry its watch.
  const terminalAt = new Map<string, number>();
  /** Per request name: settles when the watch sees it terminal (one promise, however many wait). */
  const terminal = new Map<string, PromiseWithResolvers<void>>();
  const whenTerminal = (name: string) => {
    let t = terminal.get(name);
    if (!t) terminal.set(name, (t = Promise.withResolvers<void>()));
    return t;
  };
  const watcher = await watchObjects<ModuleRequest>(
    kc,
    `/apis/${GROUP}/${VERSION}/${REQUEST_PLURAL}`,
    (r) => {
      const name = r.metadata.name ?? '';
      if (
        isTerminal(r.status?.phase) &&
        r.status?.observedGeneration === r.metadata.generation &&
        !terminalAt.has(name)
      ) {
        terminalAt.set(name, performance.now());
        whenTerminal(name).resolve();
      }
    },
  );
  /** Resolves once every one of `names` is terminal; rejects naming `what` after `timeoutMs`. */
  const waitTerminal = async (names: string[], what: string, timeoutMs = 1_800_000) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), timeoutMs);
    });
    try {
      await Promise.race([Promise.all(names.map((n) => whenTerminal(n).promise)), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  /** Milliseconds from `t0` until `name` turned terminal. */
  const terminalMs = (name: string, t0: number) => (terminalAt.get(name) ?? 0) - t0;

  // A warm-up, not measured: a fresh API server grows its heap, fills its watch cache and settles
  // its connections during its first thousand writes, and the floors run first. Without this the
  // first floor of a run was measured on a cold server (a 1,000-node fan-out's floor took 10–12 s
  // alone against 7–8 s after other floors) and the operator's ratio looked better than it is.
  if (wanted('many') || wanted('fanout') || wanted('sequential')) {
    const warm = Array.from({ length: 200 }, (_, i) => `floor-warm-${i}`);
    await withFloor(warm, async (floor) => {
      await floor.request('floor-warm-fanout', warm);
      await inParallel(
        warm,
        SUBMIT_CONCURRENCY,
        async (node, i) => void (await floor.request(`floor-warm-${i}`, [node])),
      );
    });
  }
  /**
   * A fan-out's dispatch clock: an unscoped NodeModules informer that notes when `n` objects hold
   * `request`. It is a watch the design does not need, so the fan-out's floor runs with the same
   * clock (and reports its own dispatch time): both carry the instrument, neither is charged alone.
   */
  const dispatchClock = async (request: string, n: number) => {
    let at = 0;
    const holding = new Set<string>();
    const objects = await watchObjects<NodeModules>(
      kc,
      `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`,
      (o) => {
        if (o.spec.requests?.some((e) => e.name === request)) holding.add(o.metadata.name ?? '');
        if (!at && holding.size >= n) at = performance.now();
      },
    );
    return { at: () => at, stop: () => objects.stop() };
  };
  /** Runs a floor scenario, counting its writes and the API server's CPU. */
  const floorCounted = async <T>(fn: () => Promise<T>) => {
    const cpu0 = await apiserverCpuSeconds(cp);
    const r = await counted(fn);
    return { ...r, apiserverCpuSeconds: +((await apiserverCpuSeconds(cp)) - cpu0).toFixed(2) };
  };
  /** The floor's own dispatch time per fan-out size: every node's object written with its request. */
  const floorDispatchSeconds = new Map<number, number>();
  /** The API server as each fan-out size's floor found it. */
  const floorAtStart = new Map<number, ApiserverState>();
  /** Starts BENCH_PPROF's profile of the API server for `name` (none without BENCH_PPROF). */
  const pprof = (name: string) =>
    pprofDir ? profileApiserver(cp, pprofSeconds, join(pprofDir, `${name}.pb.gz`)) : Promise.resolve();
  /** The floors of the scenarios that have one (sequential, many, fanout), each with its own floor agents. */
  const runFloors = async () => {
    if (wanted('sequential')) {
      await withFloor(['seq-node'], async (floor) => {
        await floor.request('floor-seq-warmup', ['seq-node']); // connections and JIT warm, as for the operator
        const {
          value: lat,
          writes,
          apiserverCpuSeconds,
        } = await floorCounted(async () => {
          const lat: number[] = [];
          for (let i = 0; i < sizes.sequential; i++) {
            const name = `floor-seq-${i}`;
            const t0 = performance.now();
            await floor.request(name, ['seq-node']);
            await waitTerminal([name], name);
            lat.push(terminalMs(name, t0));
          }
          return lat;
        });
        floors.set('sequential', {
          wallSeconds: lat.reduce((a, b) => a + b, 0) / 1000,
          p50Ms: percentile(lat, 50),
          p99Ms: percentile(lat, 99),
          writes: total(writes, sizes.sequential) / sizes.sequential,
          apiserverCpuSeconds,
        });
      });
    }
    if (wanted('many')) {
      const nodes = Array.from({ length: sizes.nodes }, (_, i) => `many-${i}`);
      await withFloor(nodes, async (floor) => {
        const {
          value: wall,
          writes,
          apiserverCpuSeconds,
        } = await floorCounted(async () => {
          const names = Array.from({ length: sizes.requests }, (_, i) => `floor-many-${i}`);
          const t0 = performance.now();
          // Submitted as the operator's are: 50 creates at a time; the floor's controller takes each
          // as its watch delivers it.
          const finished: Promise<void>[] = [];
          await inParallel(names, SUBMIT_CONCURRENCY, async (name, i) => {
            finished.push((await floor.submit(name, [nodes[i % nodes.length] ?? ''])).finished);
          });
          await Promise.all(finished);
          await waitTerminal(names, `the floor's ${names.length} requests`);
          return Math.max(...names.map((n) => terminalMs(n, t0))) / 1000;
        });
        floors.set('many', {
          wallSeconds: wall,
          writes: total(writes, sizes.requests) / sizes.requests,
          apiserverCpuSeconds,
        });
      });
    }
    for (const n of wanted('fanout') ? sizes.fanout : []) {
      const nodes = Array.from({ length: n }, (_, i) => `floor-fan${n}-${i}`);
      await withFloor(nodes, async (floor) => {
        let profile = Promise.resolve();
        const {
          value: ms,
          writes,
          apiserverCpuSeconds,
        } = await floorCounted(async () => {
          const clock = await dispatchClock(`floor-fan-${n}`, n);
          floorAtStart.set(n, await apiserverState(cp));
          profile = pprof(`floor-fanout-${n}`);
          const t0 = performance.now();
          await floor.request(`floor-fan-${n}`, nodes);
          await waitTerminal([`floor-fan-${n}`], `the floor's fan-out over ${n} nodes`);
          const ms = terminalMs(`floor-fan-${n}`, t0);
          await clock.stop();
          floorDispatchSeconds.set(n, (clock.at() - t0) / 1000);
          return ms;
        });
        await profile;
        floors.set(`fanout-${n}`, {
          wallSeconds: ms / 1000,
          writes: total(writes, 1) / n,
          apiserverCpuSeconds,
        });
      });
    }
    await deleteAll();
  };

  // ---- The operator. ----
  /** The operator's controller process now (started below, restarted by controller-memory). */
  const ctl = () => {
    if (!controller) throw new Error('the operator’s controller is not running');
    return controller;
  };
  const usage = (c: Component, since: { cpuSeconds: number }) => {
    const s = procStats(c.child.pid ?? 0);
    return { ...s, cpuSeconds: +(s.cpuSeconds - since.cpuSeconds).toFixed(2) };
  };
  /** Fills in a row's floor once both sides have run (either may go first): see withFloors. */
  const withFloors: (() => void)[] = [];
  const compare = (r: Result, key: string, then?: () => void) =>
    withFloors.push(() => {
      const f = floors.get(key);
      if (!f) return;
      r.floor = {
        wallSeconds: +f.wallSeconds.toFixed(2),
        p50Ms: f.p50Ms,
        p99Ms: f.p99Ms,
        apiserverCpuSeconds: f.apiserverCpuSeconds,
      };
      r.floorWritesPerRequestNode = +f.writes.toFixed(2);
      r.ratio = {
        wall: +(r.wallSeconds / f.wallSeconds).toFixed(2),
        ...(f.p50Ms && r.p50Ms ? { p50: +(r.p50Ms / f.p50Ms).toFixed(2) } : {}),
        ...(f.p99Ms && r.p99Ms ? { p99: +(r.p99Ms / f.p99Ms).toFixed(2) } : {}),
      };
      then?.();
    });
  /** Runs one operator scenario with its own agent host; fills in writes, RSS and CPU. */
  const scenario = async (
    r: Omit<Result, 'wallSeconds'>,
    nodes: string[],
    helper: string,
    pairs: number,
    userCreates: number,
    body: () => Promise<{ wallSeconds: number; lat?: number[] }>,
    agentOpts: AgentHostOptions = {},
  ) => {
    const hosts = await startAgentHosts(cp, nodes, helper, agentOpts);
    try {
      await atRest(r.name, [ctl().child.pid ?? 0, ...hosts.processes.map((c) => c.child.pid ?? 0)]);
      const ctl0 = procStats(ctl().child.pid ?? 0);
      const hosts0 = hosts.stats();
      const api0 = await apiserverCpuSeconds(cp);
      const { value, writes, refused } = await counted(body);
      const apiCpu = (await apiserverCpuSeconds(cp)) - api0;
      const agentStats = hosts.stats();
      const result: Result = {
        ...r,
        wallSeconds: +value.wallSeconds.toFixed(2),
        ...(value.lat
          ? { p50Ms: Math.round(percentile(value.lat, 50)), p99Ms: Math.round(percentile(value.lat, 99)) }
          : {}),
        writesPerRequestNode: +(total(writes, userCreates) / pairs).toFixed(2),
        writesByResource: writes,
        ...(Object.keys(refused).length ? { writesRefused: refused } : {}),
        controller: usage(ctl(), ctl0),
        agents: {
          ...agentStats,
          cpuSeconds: +(agentStats.cpuSeconds - hosts0.cpuSeconds).toFixed(2),
          processes: `${nodes.length} agents in ${hosts.processes.length} process${hosts.processes.length > 1 ? 'es' : ''} (at most ${hosts.perProcess} each)`,
        },
        apiserverCpuSeconds: +apiCpu.toFixed(2),
      };
      results.push(result);
      return result;
    } finally {
      await hosts.stop();
    }
  };

  /** The operator's side of the scenarios that have a floor. */
  const runOperatorCompared = async () => {
    if (wanted('sequential')) {
      await makeNodes(['seq-node']);
      const r = await scenario(
        {
          name: 'sequential',
          sizes: { requests: sizes.sequential, nodes: 1 },
          goal: 'p50 ≤ 1.5× floor, p99 ≤ 2.5× floor; ≤ 4 writes per (request, node)',
        },
        ['seq-node'],
        '/bin/true',
        sizes.sequential + 1,
        sizes.sequential + 1,
        async () => {
          const lat: number[] = [];
          for (let i = -1; i < sizes.sequential; i++) {
            const name = `seq-${i}`;
            const t0 = performance.now();
            await createRequest(name, { module: `m${i}`, nodeName: 'seq-node' });
            await waitTerminal([name], name);
            if (i >= 0) lat.push(terminalMs(name, t0)); // seq--1 warms up
          }
          return { wallSeconds: lat.reduce((a, b) => a + b, 0) / 1000, lat };
        },
      );
      compare(r, 'sequential');
    }

    if (wanted('many')) {
      const nodes = Array.from({ length: sizes.nodes }, (_, i) => `many-${i}`);
      await makeNodes(nodes);
      const r = await scenario(
        {
          name: 'many',
          sizes: { requests: sizes.requests, nodes: sizes.nodes },
          goal: '≤ 1.5× floor; 1000 over 100 nodes ≤ 15 s',
        },
        nodes,
        '/bin/true',
        sizes.requests,
        sizes.requests,
        async () => {
          const names = Array.from({ length: sizes.requests }, (_, i) => `many-${i}`);
          const t0 = performance.now();
          const created = new Map<string, number>();
          await inParallel(names, SUBMIT_CONCURRENCY, async (name, i) => {
            created.set(name, performance.now());
            await createRequest(name, { module: `m${i}`, nodeName: nodes[i % nodes.length] });
          });
          await waitTerminal(names, `${names.length} requests`);
          const end = Math.max(...names.map((n) => terminalAt.get(n) ?? 0));
          return {
            wallSeconds: (end - t0) / 1000,
            lat: names.map((n) => terminalMs(n, created.get(n) ?? 0)),
          };
        },
      );
      compare(r, 'many');
    }

    const dispatchSeconds = new Map<number, number>();
    const atStart = new Map<number, ApiserverState>();
    for (const n of wanted('fanout') ? sizes.fanout : []) {
      let profile = Promise.resolve();
      const nodes = Array.from({ length: n }, (_, i) => `fan${n}-${i}`);
      await makeNodes(nodes, { fanout: String(n) });
      const r = await scenario(
        {
          name: `fanout-${n}`,
          sizes: { requests: 1, nodes: n },
          goal: '1000 nodes ≤ 20 s, 5000 ≤ 90 s; ≤ 3 writes per (request, node)',
        },
        nodes,
        '/bin/true',
        n,
        1,
        async () => {
          // The controller's part alone: from the create until every node's object holds the request.
          const clock = await dispatchClock(`fanout-${n}`, n);
          atStart.set(n, await apiserverState(cp));
          profile = pprof(`fanout-${n}`);
          const t0 = performance.now();
          await createRequest(`fanout-${n}`, { module: 'fan', nodeSelector: { fanout: String(n) } });
          await waitTerminal([`fanout-${n}`], `fan-out over ${n} nodes`);
          await clock.stop();
          dispatchSeconds.set(n, (clock.at() - t0) / 1000);
          return { wallSeconds: terminalMs(`fanout-${n}`, t0) / 1000 };
        },
      );
      await profile;
      r.dispatchSeconds = +(dispatchSeconds.get(n) ?? 0).toFixed(2);
      r.apiserverAtStart = atStart.get(n);
      compare(r, `fanout-${n}`, () => {
        if (!r.floor) return;
        r.floor.dispatchSeconds = +(floorDispatchSeconds.get(n) ?? 0).toFixed(2);
        r.floor.apiserverAtStart = floorAtStart.get(n);
      });
    }
  };

  // Which side goes first alternates between runs (bench/repeat.ts): the API server keeps changing
  // over a run (its heap, its watch cache, etcd's history), and a side always measured second would
  // always pay for it. The operator's controller is stopped while the floors run: it would take
  // their requests as its own.
  if (ORDER === 'operator-first') {
    controller = await startControllerProcess(cp, controllerArgs);
    await runOperatorCompared();
    await stopComponent(controller);
    controller = undefined;
    await deleteAll();
    await runFloors();
    controller = await startControllerProcess(cp, controllerArgs);
  } else {
    await runFloors();
    controller = await startControllerProcess(cp, controllerArgs);
    await runOperatorCompared();
  }
  for (const fill of withFloors) fill();

  if (wanted('burst')) {
    // The node is Disabled while every run is dispatched, then enabled: all reach the gate together.
    await makeNodes(['burst-node']);
    await core.patchNode(
      { name: 'burst-node', body: { metadata: { annotations: { 'kmod.dev/helpers': 'Disabled' } } } },
      mergePatch(),
    );
    const n = sizes.burst;
    const ideal = Math.ceil(n / 50);
    const r = await scenario(
      {
        name: 'burst',
        sizes: { runs: n, nodes: 1, cap: 50, helperSeconds: 1 },
        goal: `close to the ideal ${ideal} s (today ×2.14)`,
      },
      ['burst-node'],
      sleeper,
      n,
      n,
      async () => {
        const names = Array.from({ length: n }, (_, i) => `burst-${i}`);
        await inParallel(names, 25, (name, i) =>
          createRequest(name, { module: `m${i}`, nodeName: 'burst-node' }).then(() => undefined),
        );
        const dispatched = async () =>
          (
            (await api
              .getClusterCustomObject({
                group: GROUP,
                version: VERSION,
                plural: NODE_MODULES_PLURAL,
                name: 'burst-node',
              })
              .catch(() => undefined)) as NodeModules | undefined
          )?.spec.requests?.length ?? 0;
        while ((await dispatched()) < n) await new Promise((r) => setTimeout(r, 200));
        const t0 = performance.now();
        await core.patchNode(
          { name: 'burst-node', body: { metadata: { annotations: { 'kmod.dev/helpers': 'Enabled' } } } },
          mergePatch(),
        );
        await waitTerminal(names, `burst of ${n}`);
        const end = Math.max(...names.map((x) => terminalAt.get(x) ?? 0));
        return { wallSeconds: (end - t0) / 1000, lat: names.map((x) => terminalMs(x, t0)) };
      },
      { maxConcurrent: 50, busyTimeoutMs: 600_000, freezeWaitMs: 600_000 },
    );
    r.floor = { wallSeconds: ideal };
    r.ratio = { wall: +(r.wallSeconds / ideal).toFixed(2) };
    r.notes = 'floor = ideal: ceil(runs / cap) × 1 s helpers';
  }

  if (wanted('dryrun-burst')) {
    // A module tree of a real node's size: modprobe -c dumps every alias (~30,000 on Debian).
    const treeRoot = join(dir, 'tree');
    const kernel = '6.1.0-kmod-bench';
    const mods = Array.from({ length: sizes.treeModules }, (_, i) => ({
      name: `bench_${i}`,
      aliases: Array.from(
        { length: 100 },
        (_, j) =>
          `pci:v0000${(i % 0xffff).toString(16).padStart(4, '0')}d0000${j.toString(16).padStart(4, '0')}sv*sd*bc*sc*i*`,
      ),
      depends: i % 3 === 0 || i === 0 ? [] : [`bench_${i - (i % 3)}`],
      description: `bench module ${i}`,
    }));
    buildModuleTree(treeRoot, kernel, mods);
    const modprobe = demoResolver(treeRoot).modprobe;
    await makeNodes(['dry-node']);
    const agent = await startAgentProcess(cp, 'dry-node', '/bin/true', [
      `--resolver=${modprobe}`,
      // One set of modprobe flags for the helper and the resolver (--resolver-args before issue 18).
      `${process.env.BENCH_MODPROBE_ARGS_FLAG ?? '--modprobe-args'}=-d ${treeRoot} -S ${kernel}`,
      // The kernel log of this machine is not the simulated node's.
      ...(process.env.BENCH_MODPROBE_ARGS_FLAG ? [] : ['--dmesg=']),
    ]);
    const LIMIT_MIB = 384;
    // The agent's part of a load: from its run's creation (the controller's dispatch) to its result.
    const runSeen = new Map<string, number>();
    const runDone = new Map<string, number>();
    const runs = await watchObjects<NodeModules>(
      kc,
      `/apis/${GROUP}/${VERSION}/${NODE_MODULES_PLURAL}`,
      (nm) => {
        const results = new Map((nm.status?.results ?? []).map((r) => [r.uid, r]));
        for (const e of nm.spec.requests ?? []) {
          if (!e.name.startsWith('load-')) continue;
          if (!runSeen.has(e.name)) runSeen.set(e.name, performance.now());
          const r = results.get(e.uid);
          if (r?.observedGeneration === e.generation && isTerminal(r.phase) && !runDone.has(e.name))
            runDone.set(e.name, performance.now());
        }
      },
      'metadata.name=dry-node',
    );
    let peakTree = 0;
    let peakChildren = 0;
    const sampler = setInterval(() => {
      const t = treeRss(agent.child.pid ?? 0);
      peakTree = Math.max(peakTree, t.rssMiB);
      peakChildren = Math.max(peakChildren, t.processes - 1);
    }, 50);
    try {
      const loadOnce = async (name: string, i: number) => {
        const t0 = performance.now();
        await createRequest(name, { module: `bench_${(i * 7) % sizes.treeModules}`, nodeName: 'dry-node' });
        await waitTerminal([name], `real load ${name}`);
        return terminalMs(name, t0);
      };
      const loadsAlone: number[] = [];
      for (let i = 0; i < sizes.loads; i++) loadsAlone.push(await loadOnce(`load-alone-${i}`, i));
      const names = Array.from({ length: sizes.dryRuns }, (_, i) => `dry-${i}`);
      const t0 = performance.now();
      const submitted = inParallel(names, SUBMIT_CONCURRENCY, (name, i) =>
        createRequest(name, {
          module:
            i % 2
              ? `bench_${i % sizes.treeModules}`
              : `pci:v0000${(i % sizes.treeModules).toString(16).padStart(4, '0')}d00000001sv0sd0bc0sc0i0`,
          nodeName: 'dry-node',
          dryRun: true,
        }).then(() => undefined),
      );
      const loadsDuring: number[] = [];
      for (let i = 0; i < sizes.loads; i++) loadsDuring.push(await loadOnce(`load-during-${i}`, i + 1));
      await submitted;
      await waitTerminal(names, `${sizes.dryRuns} dry runs`);
      const wall = (Math.max(...names.map((x) => terminalAt.get(x) ?? 0)) - t0) / 1000;
      const byReason: Record<string, number> = {};
      const examples: Record<string, string> = {};
      for (const n of names) {
        const node = watcher.get(n)?.status?.nodes?.[0];
        const reason = node?.reason ?? 'unknown';
        byReason[reason] = (byReason[reason] ?? 0) + 1;
        examples[reason] ??= (node?.message ?? '').slice(0, 300);
      }
      const s = procStats(agent.child.pid ?? 0);
      const agentPart = Array.from({ length: sizes.loads }, (_, i) => {
        const n = `load-during-${i}`;
        return (runDone.get(n) ?? 0) - (runSeen.get(n) ?? 0);
      });
      results.push({
        name: 'dryrun-burst',
        sizes: {
          dryRuns: sizes.dryRuns,
          treeModules: sizes.treeModules,
          treeAliases: sizes.treeModules * 100,
          loads: sizes.loads,
          nodes: 1,
        },
        wallSeconds: +wall.toFixed(2),
        agents: {
          rssMiB: +s.rssMiB.toFixed(1),
          peakRssMiB: +s.peakRssMiB.toFixed(1),
          cpuSeconds: s.cpuSeconds,
          processes: 'one standalone `kmod-operator agent` process and the modprobe processes it starts',
        },
        dryRuns: {
          completed: names.filter((x) => terminalAt.has(x)).length,
          byReason,
          examples,
          peakTreeRssMiB: +peakTree.toFixed(1),
          peakChildren,
          limitMiB: LIMIT_MIB,
          loadsAloneP50Ms: Math.round(percentile(loadsAlone, 50)),
          loadsAloneP95Ms: Math.round(percentile(loadsAlone, 95)),
          loadsDuringP50Ms: Math.round(percentile(loadsDuring, 50)),
          loadsDuringP95Ms: Math.round(percentile(loadsDuring, 95)),
          loadsDuringAgentP50Ms: Math.round(percentile(agentPart, 50)),
          loadsDuringAgentP95Ms: Math.round(percentile(agentPart, 95)),
        },
        goal: `all ${sizes.dryRuns} complete; peak agent tree RSS ≤ ${LIMIT_MIB} MiB (the chart's limit); real loads keep their latency`,
        ...(process.env.BENCH_NOTES ? { notes: process.env.BENCH_NOTES } : {}),
        ...(process.env.BENCH_BEFORE ? { before: beforeRow(process.env.BENCH_BEFORE) } : {}),
      });
    } finally {
      clearInterval(sampler);
      await runs.stop();
      await stopComponent(agent);
    }
  }

  if (wanted('agent-idle')) {
    await makeNodes(['rss-node']);
    const agent = await startAgentProcess(cp, 'rss-node', '/bin/true');
    // Idle: let start-up garbage be collected (V8 collects on its own schedule), then sample.
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 500));
      samples.push(procStats(agent.child.pid ?? 0).rssMiB);
    }
    const s = procStats(agent.child.pid ?? 0);
    await stopComponent(agent);
    results.push({
      name: 'agent-idle',
      sizes: { nodes: 1 },
      wallSeconds: 5,
      agents: {
        rssMiB: +(samples.at(-1) ?? 0).toFixed(1),
        peakRssMiB: +s.peakRssMiB.toFixed(1),
        cpuSeconds: s.cpuSeconds,
        processes: 'one standalone `kmod-operator agent` process',
      },
      goal: '≤ 96 MiB (moonshot 64 MiB)',
    });
  }

  if (wanted('controller-memory')) {
    // Stored requests for a node no agent serves: each is in its node's object and has a status (Pending), as
    // requests waiting on their nodes do; then a fresh controller process caches all of them.
    const n = sizes.stored;
    // What the earlier scenarios left goes first, so the row holds the stored count it names.
    await deleteAll();
    while (watcher.list().length > 0) await new Promise((r) => setTimeout(r, 200));
    // Over nodes of 100 requests each: one node takes at most MAX_REQUESTS_PER_NODE (256).
    const memNodes = Array.from({ length: Math.ceil(n / 100) }, (_, i) => `mem-node-${i}`);
    await makeNodes(memNodes);
    const t0 = performance.now();
    await inParallel(
      Array.from({ length: n }, (_, i) => i),
      SUBMIT_CONCURRENCY,
      async (i) =>
        void (await createRequest(`mem-${i}`, { module: `m${i}`, nodeName: memNodes[i % memNodes.length] })),
    );
    const progressed = () =>
      watcher.list().filter((r) => r.metadata.name?.startsWith('mem-') && r.status?.progress === '0/1')
        .length;
    while (progressed() < n) await new Promise((r) => setTimeout(r, 200));
    const wall = (performance.now() - t0) / 1000;
    const busy = procStats(ctl().child.pid ?? 0);
    await stopComponent(ctl());
    controller = await startControllerProcess(cp, controllerArgs);
    const fresh = controller;
    await settledWrites(cp);
    const s = procStats(fresh.child.pid ?? 0);
    results.push({
      name: 'controller-memory',
      sizes: { storedRequests: n, storedNodes: (await core.listNode()).items.length },
      wallSeconds: +wall.toFixed(2),
      controller: {
        rssMiB: +s.rssMiB.toFixed(1),
        peakRssMiB: +s.peakRssMiB.toFixed(1),
        cpuSeconds: s.cpuSeconds,
      },
      goal: '≤ 256 MB with 10,000 requests stored',
      notes: `fresh controller after restart, caches synced; the controller that processed them: RSS ${busy.rssMiB.toFixed(1)} MiB, peak ${busy.peakRssMiB.toFixed(1)} MiB`,
    });
  }
  await watcher.stop();
} finally {
  if (controller) await stopComponent(controller);
  await cp.stop();
}

/** The dryrun-burst figures of an earlier run's results file (BENCH_BEFORE). */
function beforeRow(path: string): NonNullable<Result['before']> {
  const row = (JSON.parse(readFileSync(path, 'utf8')) as { results: Result[] }).results.find(
    (r) => r.name === 'dryrun-burst',
  );
  if (!row?.dryRuns) throw new Error(`BENCH_BEFORE=${path} has no dryrun-burst row`);
  return { wallSeconds: row.wallSeconds, agents: row.agents, dryRuns: row.dryRuns, notes: row.notes };
}

// ---- Report. ----
const version = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0] ?? '';
  } catch {
    return 'unknown';
  }
};
const machine = {
  cpus: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
  memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
  loadAverageAtEnd: loadavg().map((x) => +x.toFixed(2)),
  node: process.version,
  kubeApiserver: version(join(ensureBinaries(), 'kube-apiserver'), ['--version']),
  setpriv: version('setpriv', ['--version']),
  scale: full ? 'full' : 'small',
  order: ORDER,
  date: new Date().toISOString(),
};
if (process.env.BENCH_MERGE) {
  // Only this run's rows change; each carries the machine it was measured on.
  const old = JSON.parse(readFileSync(resultsPath, 'utf8')) as { machine: unknown; results: Result[] };
  const mine = new Map(results.map((r) => [r.name, { ...r, machine }]));
  const merged = old.results.map((r) => mine.get(r.name) ?? r);
  for (const r of mine.values()) if (!old.results.some((o) => o.name === r.name)) merged.push(r);
  writeFileSync(resultsPath, `${JSON.stringify({ machine: old.machine, results: merged }, null, 2)}\n`);
} else writeFileSync(resultsPath, `${JSON.stringify({ machine, results }, null, 2)}\n`);
const cell = (v: string | number | undefined) => (v === undefined ? '-' : String(v));
const rows = results.map((r) => [
  r.name,
  Object.entries(r.sizes)
    .map(([k, v]) => `${k}=${v}`)
    .join(' '),
  cell(r.wallSeconds),
  cell(r.p50Ms),
  cell(r.p99Ms),
  r.floor
    ? `${r.floor.wallSeconds}s${r.floor.p50Ms ? ` p50 ${Math.round(r.floor.p50Ms)}` : ''}${r.floor.p99Ms ? ` p99 ${Math.round(r.floor.p99Ms)}` : ''}`
    : '-',
  r.ratio
    ? `×${r.ratio.wall}${r.ratio.p50 ? ` p50×${r.ratio.p50}` : ''}${r.ratio.p99 ? ` p99×${r.ratio.p99}` : ''}`
    : '-',
  r.writesPerRequestNode === undefined
    ? '-'
    : `${r.writesPerRequestNode} (floor ${cell(r.floorWritesPerRequestNode)})`,
  r.controller ? `${r.controller.rssMiB.toFixed(0)}/${r.controller.cpuSeconds}s` : '-',
  r.agents ? `${r.agents.rssMiB.toFixed(0)}/${r.agents.cpuSeconds}s` : '-',
  r.apiserverCpuSeconds === undefined ? '-' : `${r.apiserverCpuSeconds}s`,
]);
const header = [
  'scenario',
  'sizes',
  'wall s',
  'p50 ms',
  'p99 ms',
  'floor',
  'ratio',
  'writes/(req,node)',
  'ctl MiB/cpu',
  'agents MiB/cpu',
  'apiserver cpu',
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ');
console.log(line(header));
for (const r of rows) console.log(line(r));
for (const r of results) {
  if (r.dryRuns) {
    const d = r.dryRuns;
    console.log(
      `${r.name}: ${d.completed}/${r.sizes.dryRuns} completed (${Object.entries(d.byReason)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}); ` +
        `agent tree peak RSS ${d.peakTreeRssMiB} MiB (limit ${d.limitMiB}), ${d.peakChildren} processes below it at most; ` +
        `real loads p50/p95 ${d.loadsAloneP50Ms}/${d.loadsAloneP95Ms} ms alone, ${d.loadsDuringP50Ms}/${d.loadsDuringP95Ms} ms during the burst ` +
        `(the agent's part: ${d.loadsDuringAgentP50Ms}/${d.loadsDuringAgentP95Ms} ms from the run's creation to its result)`,
    );
  }
  const dispatch =
    r.dispatchSeconds === undefined
      ? ''
      : `; every node's object held the request after ${r.dispatchSeconds} s (floor ${r.floor?.dispatchSeconds ?? '-'} s)`;
  const held = (a?: ApiserverState) => (a ? `${a.heapMiB} MiB heap, ${a.goroutines} goroutines` : '-');
  const server = r.apiserverAtStart
    ? `; the API server held ${held(r.apiserverAtStart)} at the create (floor ${held(r.floor?.apiserverAtStart)})`
    : '';
  console.log(`${r.name}: goal ${r.goal}${dispatch}${server}${r.notes ? `; ${r.notes}` : ''}`);
}
console.log(`machine: ${JSON.stringify(machine)}`);
console.log(`wrote ${resultsPath}`);
