/**
 * `make bench` scenarios run several times, for figures that vary from run to
 * run (the fan-out over 1,000 nodes): runs `bench/bench.ts` RUNS times with
 * the given variables, each writing its own results to a temporary file, and
 * writes every run's figures with their median, min and max per scenario to
 * bench/results-repeat.json (or BENCH_RESULTS=path): wall time and floor, and
 * where a row has them the ratios to the floor (wall, p50, p99, the API
 * server's CPU), the writes per (request, node) and the components' RSS. A
 * ratio's median is the median of each run's own ratio, not a ratio of medians.
 *
 * Run: node_modules/.bin/node bench/repeat.ts RUNS [VAR=value...]
 * e.g. BENCH_RESULTS=bench/results-fanout-1000-x6.json node_modules/.bin/node bench/repeat.ts 6 BENCH_ONLY=fanout BENCH_FANOUT=1000
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Result } from './bench.ts';
import { projectRoot } from './support.ts';
import { parseFigures, resultsPath, writeResults } from '../test/support/results.ts';

const [runsArg, ...vars] = process.argv.slice(2);
const runs = Number(runsArg);
if (!Number.isInteger(runs) || runs < 1)
  throw new Error(`RUNS (the first argument) must be a positive whole number, got '${runsArg}'`);
const env = Object.fromEntries(Object.entries(parseFigures(vars)).map(([k, v]) => [k, String(v)]));
const out = resultsPath('bench/results-repeat.json');
const loadAtStart = loadavg().map((x) => +x.toFixed(2));
const dir = mkdtempSync(join(tmpdir(), 'kmod-repeat-'));
process.once('exit', () => rmSync(dir, { recursive: true, force: true }));

/** The figures kept per run of a row, beyond wall time and floor; a row without one leaves it out. */
const figuresOf = (row: Result): Record<string, number | undefined> => ({
  ratio: row.ratio?.wall,
  p50Ratio: row.ratio?.p50,
  p99Ratio: row.ratio?.p99,
  apiserverCpuRatio:
    row.apiserverCpuSeconds !== undefined && row.floor?.apiserverCpuSeconds
      ? +(row.apiserverCpuSeconds / row.floor.apiserverCpuSeconds).toFixed(2)
      : undefined,
  writesPerRequestNode: row.writesPerRequestNode,
  controllerMiB: row.controller ? +row.controller.rssMiB.toFixed(1) : undefined,
  agentsMiB: row.agents ? +row.agents.rssMiB.toFixed(1) : undefined,
});
const byScenario = new Map<
  string,
  { sizes: Result['sizes']; wall: number[]; floor: number[]; figures: Map<string, number[]> }
>();
/** Run i's order: as given, or alternating (see the module comment). */
const orderOf = (i: number) =>
  env.BENCH_ORDER ?? process.env.BENCH_ORDER ?? (i % 2 === 1 ? 'floor-first' : 'operator-first');
const orders: string[] = [];
for (let i = 1; i <= runs; i++) {
  const path = join(dir, `run-${i}.json`);
  orders.push(orderOf(i));
  const r = spawnSync(join(projectRoot, 'node_modules/.bin/node'), [join(projectRoot, 'bench/bench.ts')], {
    cwd: projectRoot,
    env: { ...process.env, ...env, BENCH_ORDER: orderOf(i), BENCH_RESULTS: path },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`run ${i} of bench/bench.ts failed (exit ${r.status}):\n${r.stdout}`);
  for (const row of (JSON.parse(readFileSync(path, 'utf8')) as { results: Result[] }).results) {
    const s = byScenario.get(row.name) ?? {
      sizes: row.sizes,
      wall: [],
      floor: [],
      figures: new Map<string, number[]>(),
    };
    s.wall.push(row.wallSeconds);
    if (row.floor) s.floor.push(row.floor.wallSeconds);
    for (const [k, v] of Object.entries(figuresOf(row)))
      if (v !== undefined) s.figures.set(k, [...(s.figures.get(k) ?? []), v]);
    byScenario.set(row.name, s);
    console.log(
      `run ${i} (${orderOf(i)}): ${row.name} ${row.wallSeconds} s (floor ${row.floor?.wallSeconds ?? '-'} s)`,
    );
  }
}

/** Median (the upper middle of an even count), min and max. */
const summary = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)] ?? 0, min: sorted[0] ?? 0, max: sorted.at(-1) ?? 0 };
};
const scenarios = Object.fromEntries(
  [...byScenario].map(([name, s]) => [
    name,
    {
      sizes: s.sizes,
      wallSeconds: { ...summary(s.wall), each: s.wall },
      floorSeconds: { ...summary(s.floor), each: s.floor },
      ...Object.fromEntries([...s.figures].map(([k, xs]) => [k, { ...summary(xs), each: xs }])),
    },
  ]),
);
for (const [name, s] of Object.entries(scenarios)) {
  console.log(
    `${name}: median ${s.wallSeconds.median} s (min ${s.wallSeconds.min}, max ${s.wallSeconds.max}) over ${runs} runs; floor median ${s.floorSeconds.median} s`,
  );
  const figures = byScenario.get(name)?.figures;
  const ratios = (['ratio', 'p50Ratio', 'p99Ratio', 'apiserverCpuRatio'] as const)
    .filter((k) => figures?.has(k))
    .map((k) => `${k} median ×${summary(figures?.get(k) ?? []).median}`);
  if (ratios.length) console.log(`${name}: ${ratios.join(', ')}`);
}
writeResults(
  out,
  { command: ['node_modules/.bin/node bench/repeat.ts', runs, ...vars].join(' '), runs, orders, scenarios },
  { loadAverageAtStart: loadAtStart },
);
