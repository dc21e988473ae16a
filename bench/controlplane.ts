/**
 * Benchmark: warm start of the local control plane (binaries cached) until it
 * is ready (/readyz and the default namespace), and its stop. Prints one line
 * per round and a summary, and writes them to bench/results-controlplane.json
 * (or BENCH_RESULTS=path). Run: node_modules/.bin/node bench/controlplane.ts [rounds]
 */
import { loadavg } from 'node:os';
import { ensureBinaries, startControlPlane } from '../src/cluster/controlplane.ts';
import { resultsPath, writeResults } from '../test/support/results.ts';

const rounds = Number(process.argv[2] ?? 5);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`rounds (the first argument) must be a positive whole number, got '${process.argv[2]}'`);
const out = resultsPath('bench/results-controlplane.json');
const loadAtStart = loadavg().map((x) => +x.toFixed(2));
const binDir = ensureBinaries();
const starts: number[] = [];
const stops: number[] = [];
for (let i = 1; i <= rounds; i++) {
  const t0 = performance.now();
  const cp = await startControlPlane({ binDir });
  const t1 = performance.now();
  await cp.stop();
  const t2 = performance.now();
  starts.push(t1 - t0);
  stops.push(t2 - t1);
  console.log(
    `round ${i}: ready in ${((t1 - t0) / 1000).toFixed(2)} s, stopped in ${((t2 - t1) / 1000).toFixed(2)} s`,
  );
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
console.log(
  `warm start to ready: median ${(median(starts) / 1000).toFixed(2)} s, min ${(Math.min(...starts) / 1000).toFixed(2)} s, ` +
    `max ${(Math.max(...starts) / 1000).toFixed(2)} s over ${rounds} rounds; stop: median ${(median(stops) / 1000).toFixed(2)} s`,
);
const seconds = (ms: number) => +(ms / 1000).toFixed(2);
writeResults(
  out,
  {
    command: `node_modules/.bin/node bench/controlplane.ts ${rounds}`,
    rounds,
    startSeconds: {
      median: seconds(median(starts)),
      min: seconds(Math.min(...starts)),
      max: seconds(Math.max(...starts)),
      each: starts.map(seconds),
    },
    stopSeconds: { median: seconds(median(stops)), each: stops.map(seconds) },
  },
  { loadAverageAtStart: loadAtStart },
);
