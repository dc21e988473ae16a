/**
 * `make bench` scenarios run several times, for figures that vary from run to
 * run (the fan-out over 1,000 nodes): runs `bench/bench.ts` RUNS times with
 * the given variables, each writing its own results to a temporary file, and
 * writes every run's wall time and floor with their median, min and max per
 * scenario to bench/results-repeat.json (or BENCH_RESULTS=path).
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

const byScenario = new Map<string, { wall: number[]; floor: number[] }>();
for (let i = 1; i <= runs; i++) {
  const path = join(dir, `run-${i}.json`);
  const r = spawnSync(join(projectRoot, 'node_modules/.bin/node'), [join(projectRoot, 'bench/bench.ts')], {
    cwd: projectRoot,
    env: { ...process.env, ...env, BENCH_RESULTS: path },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`run ${i} of bench/bench.ts failed (exit ${r.status}):\n${r.stdout}`);
  for (const row of (JSON.parse(readFileSync(path, 'utf8')) as { results: Result[] }).results) {
    const s = byScenario.get(row.name) ?? { wall: [], floor: [] };
    s.wall.push(row.wallSeconds);
    if (row.floor) s.floor.push(row.floor.wallSeconds);
    byScenario.set(row.name, s);
    console.log(`run ${i}: ${row.name} ${row.wallSeconds} s (floor ${row.floor?.wallSeconds ?? '-'} s)`);
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
      wallSeconds: { ...summary(s.wall), each: s.wall },
      floorSeconds: { ...summary(s.floor), each: s.floor },
    },
  ]),
);
for (const [name, s] of Object.entries(scenarios))
  console.log(
    `${name}: median ${s.wallSeconds.median} s (min ${s.wallSeconds.min}, max ${s.wallSeconds.max}) over ${runs} runs; floor median ${s.floorSeconds.median} s`,
  );
writeResults(
  out,
  { command: ['node_modules/.bin/node bench/repeat.ts', runs, ...vars].join(' '), runs, scenarios },
  { loadAverageAtStart: loadAtStart },
);
