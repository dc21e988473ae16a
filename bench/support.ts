/**
 * What the benchmarks (and the fault tests) measure with, from outside the
 * measured processes: the operator's components started as real processes
 * (`kmod-operator controller`, `kmod-operator agent` as the image runs them,
 * from the bundle with the Dockerfile's ENTRYPOINT; or bench/agents.ts for
 * many simulated nodes in one process), their RSS and CPU time read from
 * /proc, and the API server's own count of the writes it served
 * (apiserver_request_total), so a number never depends on what the operator
 * says about itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { join, resolve } from 'node:path';
import { BUNDLE, imageEntrypoint } from '../scripts/bundle.ts';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { freePort, type ControlPlane } from '../src/cluster/controlplane.ts';
import { Informer } from '../src/kube/informer.ts';
import { silentLogger } from '../src/observability/logger.ts';

export const projectRoot = resolve(import.meta.dirname, '..');
const node = join(projectRoot, 'node_modules/.bin/node');

/** A component running as its own process, with its health port and captured output. */
export interface Component {
  readonly name: string;
  readonly child: ChildProcess;
  /** The port of /metrics, /healthz, /readyz (0 for processes that serve none). */
  readonly port: number;
  output(): string;
  /** Resolves with the exit code (or 128+signal) once the process has exited. */
  readonly exited: Promise<number>;
}

function launch(
  name: string,
  args: string[],
  port: number,
  env: NodeJS.ProcessEnv = {},
  command = node,
): Component {
  const child = spawn(command, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  // BENCH_LOGS=dir keeps each component's whole output in dir/NAME.log (profiling, post-mortems).
  const logDir = process.env.BENCH_LOGS;
  const logFile = logDir ? join(logDir, `${name.replace(/[^A-Za-z0-9_.-]+/g, '_')}.log`) : undefined;
  // Keep only the tail: a long bench would otherwise hold every log line.
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
    if (logFile) appendFileSync(logFile, d);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number>((r) => {
    if (child.exitCode !== null) r(child.exitCode);
    child.once('exit', (code, signal) => r(code ?? (signal ? 128 : -1)));
  });
  return { name, child, port, output: () => out, exited };
}

/** Starts `kmod-operator SUBCOMMAND` with its health port on 127.0.0.1; resolves once /readyz answers 200. */
async function startCli(
  name: string,
  subcommand: string,
  cp: ControlPlane,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<Component> {
  const port = await freePort();
  // What the image runs (the bundle, with the Dockerfile's node flags), so RSS is a node's RSS.
  const image = await imageEntrypoint();
  const c = launch(
    name,
    [
      ...image.args,
      subcommand,
      `--kubeconfig=${cp.kubeconfigPath}`,
      `--metrics-address=127.0.0.1:${port}`,
      ...args,
    ],
    port,
    { LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn', ...env },
    image.command,
  );
  await waitReady(c);
  return c;
}

/**
 * Starts `kmod-operator controller` against the control plane; resolves once it is ready. `env` is
 * added to its environment (e.g. LOG_LEVEL=info to read its log).
 */
export function startControllerProcess(
  cp: ControlPlane,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<Component> {
  return startCli('controller', 'controller', cp, extra, env);
}

/** Starts `kmod-operator agent` for one node, as the DaemonSet runs it; resolves once it is ready. */
export function startAgentProcess(
  cp: ControlPlane,
  nodeName: string,
  helper: string,
  extra: string[] = [],
): Promise<Component> {
  return startCli(`agent ${nodeName}`, 'agent', cp, [
    `--node-name=${nodeName}`,
    `--helper=${helper}`,
    // Fake helpers load nothing: there is no module tree for modprobe to resolve requests against.
    '--resolver=',
    '--boot-id-source=node',
    ...extra,
  ]);
}

/**
 * The simulated agents of a scenario: bench/agents.ts processes, each running an in-process Agent
 * per node for up to `perProcess` nodes. A real node runs one agent process; packing thousands
 * into one process would charge the operator for what no node pays (a helper forked from a
 * 1.4 GB process copies its page tables; one heap's garbage collection pauses every agent).
 */
export interface AgentHosts {
  readonly processes: Component[];
  /** At most this many agents in each process. */
  readonly perProcess: number;
  /** RSS now and at peak, and CPU seconds so far, summed over the processes. */
  stats(): ProcStats;
  /** SIGTERM to every process; resolves once all have exited. */
  stop(): Promise<void>;
}

/** The AgentOptions a scenario's simulated agents get (bench/agents.ts BENCH_AGENT_OPTS). */
export type AgentHostOptions = { maxConcurrent?: number; busyTimeoutMs?: number; freezeWaitMs?: number };

/**
 * Agents per bench/agents.ts process: BENCH_AGENTS_PER_PROCESS, default 250. A node forks its
 * helpers from one agent's process (about 85 MiB); the fewer agents share a process, the closer a
 * simulated fork's cost is to a node's, on both sides (bench/RESULTS.md has 1,000 against 250).
 */
function agentsPerProcess(): number {
  const v = process.env.BENCH_AGENTS_PER_PROCESS ?? '250';
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`BENCH_AGENTS_PER_PROCESS must be a positive whole number, got '${v}'`);
  return n;
}

/**
 * Starts the agents of `nodes` in ceil(nodes / perProcess) bench/agents.ts processes; resolves once
 * every process printed that all its agents have started.
 */
export function startAgentHosts(
  cp: ControlPlane,
  nodes: string[],
  helper: string,
  opts: AgentHostOptions = {},
  perProcess = agentsPerProcess(),
): Promise<AgentHosts> {
  return startHosts('agents', nodes, perProcess, {
    BENCH_KUBECONFIG: cp.kubeconfigPath,
    BENCH_HELPER: helper,
    BENCH_AGENT_OPTS: JSON.stringify(opts),
  });
}

/**
 * Starts the floor's agents of `nodes` (bench/floor-agents.ts) in processes of the operator's
 * simulated agents' size; resolves once every process has its nodes' watches open.
 */
export function startFloorAgentHosts(cp: ControlPlane, nodes: string[]): Promise<AgentHosts> {
  return startHosts('floor-agents', nodes, agentsPerProcess(), { BENCH_KUBECONFIG: cp.kubeconfigPath });
}

/** Starts bench/SCRIPT.ts processes of up to `perProcess` of `nodes` each, with `env`. */
async function startHosts(
  script: 'agents' | 'floor-agents',
  nodes: string[],
  perProcess: number,
  env: NodeJS.ProcessEnv,
): Promise<AgentHosts> {
  const groups: string[][] = [];
  for (let i = 0; i < nodes.length; i += perProcess) groups.push(nodes.slice(i, i + perProcess));
  const processes: Component[] = [];
  const stop = async () => void (await Promise.all(processes.map((c) => stopComponent(c))));
  try {
    // One after another: each starts its agents in batches, and the API server answers them.
    for (const [i, group] of groups.entries())
      processes.push(
        await startHost(script, i ? `${script}-${i}` : script, { ...env, BENCH_NODES: group.join(',') }),
      );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    processes,
    perProcess,
    stats: () =>
      processes
        .map((c) => procStats(c.child.pid ?? 0))
        .reduce((a, b) => ({
          rssMiB: a.rssMiB + b.rssMiB,
          peakRssMiB: a.peakRssMiB + b.peakRssMiB,
          cpuSeconds: a.cpuSeconds + b.cpuSeconds,
        })),
    stop,
  };
}

/**
 * Node's own flags in the Dockerfile's ENTRYPOINT (those before the bundle): the simulated agents,
 * and the floor's, run with the heap settings a node's agent runs with. Without them a host of
 * many agents grew a young generation of V8's default size, and with it the RSS every helper fork
 * copies page tables for (bench/RESULTS.md).
 */
async function imageNodeFlags(): Promise<string[]> {
  const { args } = await imageEntrypoint();
  return args.slice(0, args.indexOf(BUNDLE));
}

/** Starts one bench/SCRIPT.ts process; resolves once it printed that every agent has started. */
async function startHost(script: string, name: string, env: NodeJS.ProcessEnv): Promise<Component> {
  const c = launch(name, [...(await imageNodeFlags()), join(projectRoot, `bench/${script}.ts`)], 0, env);
  await new Promise<void>((res, rej) => {
    const check = () => {
      if (c.output().includes('agents ready')) {
        c.child.stdout?.off('data', check);
        res();
      }
    };
    c.child.stdout?.on('data', check);
    void c.exited.then((code) => rej(new Error(`${name} exited ${code}:\n${c.output()}`)));
  });
  return c;
}

/** SIGTERM (or `signal`), then waits for the exit. */
export async function stopComponent(c: Component, signal: NodeJS.Signals = 'SIGTERM'): Promise<number> {
  if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill(signal);
  return c.exited;
}

async function waitReady(c: Component, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (c.child.exitCode !== null) throw new Error(`${c.name} exited ${c.child.exitCode}:\n${c.output()}`);
    if ((await httpStatus(`http://127.0.0.1:${c.port}/readyz`)) === 200) return;
    if (Date.now() > deadline) throw new Error(`${c.name} not ready after ${timeoutMs} ms:\n${c.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function httpStatus(url: string): Promise<number> {
  return new Promise((res) => {
    const req = httpRequest(url, { timeout: 2000 }, (resp) => {
      resp.resume();
      res(resp.statusCode ?? 0);
    });
    req.on('error', () => res(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

/** Resident set size now and at its peak (VmHWM), and CPU seconds (user + system) so far, of `pid`. */
export interface ProcStats {
  rssMiB: number;
  peakRssMiB: number;
  cpuSeconds: number;
}

/** Reads /proc/PID/status and /proc/PID/stat. */
export function procStats(pid: number): ProcStats {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  // Fields after the command name (which may hold spaces and parentheses): utime is 14th, stime 15th.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssMiB: kib('VmRSS') / 1024, peakRssMiB: kib('VmHWM') / 1024, cpuSeconds: ticks / 100 };
}

/**
 * RSS of `pid` and every process below it, summed (what a container's memory limit counts), and
 * how many processes that is. Reads /proc; processes that exit meanwhile are skipped.
 */
export function treeRss(pid: number): { rssMiB: number; processes: number } {
  const parent = new Map<number, number>();
  const rss = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      parent.set(Number(entry), Number(/^PPid:\s+(\d+)/m.exec(status)?.[1] ?? 0));
      rss.set(Number(entry), Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0));
    } catch {
      /* gone */
    }
  }
  const inTree = (p: number): boolean => {
    for (let cur = p, hops = 0; cur > 1 && hops < 64; cur = parent.get(cur) ?? 0, hops++)
      if (cur === pid) return true;
    return false;
  };
  let kib = 0;
  let processes = 0;
  for (const [p, r] of rss) {
    if (!inTree(p)) continue;
    kib += r;
    processes++;
  }
  return { rssMiB: kib / 1024, processes };
}

/** Writes the API server served, by "resource[/subresource]", from its apiserver_request_total. */
export type WriteCounts = Record<string, number>;

const WRITE_VERBS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY']);

/** A GET of `path` on kube-apiserver as the admin: the body, or an error naming the status. */
function getApiserver(cp: ControlPlane, path: string): Promise<Buffer> {
  return new Promise<Buffer>((res, rej) => {
    const req = request(
      `${cp.server}${path}`,
      { ca: cp.caPem, headers: { authorization: `Bearer ${cp.adminToken}` } },
      (resp) => {
        const chunks: Buffer[] = [];
        resp.on('data', (c: Buffer) => chunks.push(c));
        resp.on('end', () => {
          const body = Buffer.concat(chunks);
          if (resp.statusCode === 200) res(body);
          else
            rej(
              new Error(`kube-apiserver ${path}: HTTP ${resp.statusCode}: ${body.toString().slice(0, 200)}`),
            );
        });
      },
    );
    req.on('error', rej);
    req.end();
  });
}

/** kube-apiserver's /metrics, as text. */
async function scrapeApiserver(cp: ControlPlane): Promise<string> {
  return (await getApiserver(cp, '/metrics')).toString('utf8');
}

export interface ApiserverState {
  heapMiB: number;
  goroutines: number;
}

/**
 * The API server's live heap and goroutines (its Go runtime's metrics). A side's fan-out starts
 * from the server the run has left (watches open, history kept), and these say how much it holds
 * (bench/RESULTS.md: the operator's second 5,000-node run started from a heap a third larger).
 */
export async function apiserverState(cp: ControlPlane): Promise<ApiserverState> {
  const text = await scrapeApiserver(cp);
  return {
    heapMiB: +(unlabelled(text, 'go_memstats_heap_inuse_bytes') / 2 ** 20).toFixed(1),
    goroutines: unlabelled(text, 'go_goroutines'),
  };
}

/** The value of the unlabelled metric `name` in a /metrics text; throws naming it when absent. */
function unlabelled(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m?.[1]) throw new Error(`kube-apiserver /metrics has no ${name}`);
  return Number(m[1]);
}

/**
 * Starts a CPU profile of kube-apiserver (its /debug/pprof/profile) for `seconds`; resolves once it
 * is written to `path` (gzipped protobuf, for `go tool pprof`). The profile is fixed-length: time
 * after the scenario ends adds only what the server did meanwhile.
 */
export async function profileApiserver(cp: ControlPlane, seconds: number, path: string): Promise<void> {
  writeFileSync(path, await getApiserver(cp, `/debug/pprof/profile?seconds=${seconds}`));
}

/**
 * CPU seconds kube-apiserver has used (its own process_cpu_seconds_total): on this machine the API
 * server shares the cores with everything else, so a scenario's figures say where they went.
 */
export async function apiserverCpuSeconds(cp: ControlPlane): Promise<number> {
  return unlabelled(await scrapeApiserver(cp), 'process_cpu_seconds_total');
}

/**
 * Waits until the API server and the processes `pids` are at rest: their CPU over one window
 * together under `maxCores`. A scenario (and its floor) starts from rest, not while the API server
 * still answers a thousand agents' first lists or kube-controller-manager takes in new Nodes, which
 * would be charged to whichever ran first. Gives up after `maxMs`; says how it ended.
 */
export async function settle(
  cp: ControlPlane,
  pids: number[],
  { maxCores = 0.25, windowMs = 1000, maxMs = 60_000 } = {},
): Promise<{ waitedMs: number; settled: boolean; cores: number }> {
  const t0 = performance.now();
  const cpu = async () =>
    (await apiserverCpuSeconds(cp)) + pids.reduce((sum, pid) => sum + procStats(pid).cpuSeconds, 0);
  let before = await cpu();
  for (;;) {
    const start = performance.now();
    await new Promise((r) => setTimeout(r, windowMs));
    const now = await cpu();
    const cores = (now - before) / ((performance.now() - start) / 1000);
    before = now;
    const waitedMs = Math.round(performance.now() - t0);
    if (cores < maxCores) return { waitedMs, settled: true, cores };
    if (waitedMs > maxMs) return { waitedMs, settled: false, cores };
  }
}

/** The labels and value of each apiserver_request_total series in kube-apiserver's /metrics. */
async function apiserverRequestSeries(
  cp: ControlPlane,
): Promise<Array<{ labels: Record<string, string>; value: number }>> {
  const series = [];
  for (const line of (await scrapeApiserver(cp)).split('\n')) {
    if (!line.startsWith('apiserver_request_total{')) continue;
    const labels = Object.fromEntries(
      [...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? '', m[2] ?? '']),
    );
    series.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return series;
}

/**
 * One scrape of kube-apiserver's /metrics: apiserver_request_total over the write verbs, by
 * resource (`writes`), and of those the ones it refused, keyed `resource[/subresource] CODE`
 * (`refused`: 429 throttled, 409 conflict, 422 invalid or a failed JSON-patch test, 504 timed out),
 * which is where writes beyond the ideal come from.
 */
export async function apiserverWriteCounts(
  cp: ControlPlane,
): Promise<{ writes: WriteCounts; refused: WriteCounts }> {
  const writes: WriteCounts = {};
  const refused: WriteCounts = {};
  for (const { labels, value } of await apiserverRequestSeries(cp)) {
    if (!WRITE_VERBS.has(labels.verb ?? '')) continue;
    const key = labels.subresource ? `${labels.resource}/${labels.subresource}` : (labels.resource ?? '');
    writes[key] = (writes[key] ?? 0) + value;
    if (!(labels.code ?? '').startsWith('2'))
      refused[`${key} ${labels.code}`] = (refused[`${key} ${labels.code}`] ?? 0) + value;
  }
  return { writes, refused };
}

/** apiserverWriteCounts' writes by resource. */
export async function apiserverWrites(cp: ControlPlane): Promise<WriteCounts> {
  return (await apiserverWriteCounts(cp)).writes;
}

/**
 * How many requests kube-apiserver has answered whose labels match `match` (e.g. `{ verb: 'POST',
 * resource: 'moduleruns', code: '403' }`: creates of runs that admission refused), from its own
 * apiserver_request_total.
 */
export async function apiserverRequests(cp: ControlPlane, match: Record<string, string>): Promise<number> {
  return (await apiserverRequestSeries(cp))
    .filter(({ labels }) => Object.entries(match).every(([k, v]) => labels[k] === v))
    .reduce((sum, { value }) => sum + value, 0);
}

/** after − before, leaving out resources with no writes in between. */
export function writesBetween(before: WriteCounts, after: WriteCounts): WriteCounts {
  const out: WriteCounts = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

/**
 * Waits until the API server's write counters stop moving for `quietMs` (the
 * operator's trailing writes, e.g. Events sent after the terminal status, are
 * counted with the scenario that caused them); gives up after `maxMs`.
 */
export async function settledWrites(cp: ControlPlane, quietMs = 1500, maxMs = 30_000): Promise<WriteCounts> {
  const deadline = Date.now() + maxMs;
  let last = await apiserverWrites(cp);
  for (;;) {
    await new Promise((r) => setTimeout(r, quietMs));
    const now = await apiserverWrites(cp);
    if (JSON.stringify(now) === JSON.stringify(last) || Date.now() > deadline) return now;
    last = now;
  }
}

/** The p-th percentile (nearest rank) of `xs`. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) return 0;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function inParallel<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * A measuring watch: an informer on `path` (optionally one `fieldSelector`), quiet and without
 * resyncs, that hands every added or updated object to `onObject`; resolves once it has listed.
 */
export async function watchObjects<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  onObject: (obj: T) => void,
  fieldSelector?: string,
): Promise<Informer<T>> {
  const informer = new Informer<T>({ kc, path, fieldSelector, logger: silentLogger(), resyncMs: 0 });
  informer.on('add', onObject);
  informer.on('update', onObject);
  await informer.start();
  return informer;
}
