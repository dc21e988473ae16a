/**
 * Benchmark: the control plane's cold build, as a fresh clone on a new
 * machine does it: test/cluster/build.sh of this commit (from `git archive`,
 * so no cached binaries) with empty Go module and build caches, under
 * `/usr/bin/time -v`. Writes wall time, CPU seconds and peak RSS to
 * bench/results-coldbuild.json (or BENCH_RESULTS=path). It downloads the
 * modules from the Go module proxy and keeps both cores busy for minutes.
 *
 * Run: node_modules/.bin/node bench/coldbuild.ts
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from './support.ts';
import { resultsPath, writeResults } from '../test/support/results.ts';

const out = resultsPath('bench/results-coldbuild.json');
const loadAtStart = loadavg().map((x) => +x.toFixed(2));
const work = mkdtempSync(join(tmpdir(), 'kmod-coldbuild-'));
const clean = () => {
  // The module cache is read-only by design: make it writable to remove it.
  spawnSync('chmod', ['-R', 'u+w', work]);
  rmSync(work, { recursive: true, force: true });
};
process.once('exit', clean);

const tree = join(work, 'clone');
execFileSync('mkdir', ['-p', tree]);
execFileSync('sh', ['-c', `git -C '${projectRoot}' archive HEAD test/cluster | tar -x -C '${tree}'`]);
const commit = execFileSync('git', ['-C', projectRoot, 'rev-parse', '--short', 'HEAD'], {
  encoding: 'utf8',
}).trim();
console.log(`cold build of the control plane (commit ${commit}) in ${tree}: empty GOMODCACHE and GOCACHE`);
const r = spawnSync('/usr/bin/time', ['-v', 'bash', join(tree, 'test/cluster/build.sh')], {
  encoding: 'utf8',
  env: { ...process.env, GOMODCACHE: join(work, 'gomodcache'), GOCACHE: join(work, 'gocache') },
  maxBuffer: 64 * 1024 * 1024,
});
if (r.status !== 0) throw new Error(`build.sh failed (exit ${r.status}):\n${r.stderr.slice(-4000)}`);
/** A field of `/usr/bin/time -v`'s report. */
const field = (name: string): string => {
  const m = new RegExp(`^\\s*${name.replace(/[()]/g, '\\$&')}: (.+)$`, 'm').exec(r.stderr);
  if (!m?.[1]) throw new Error(`/usr/bin/time -v printed no "${name}":\n${r.stderr.slice(-2000)}`);
  return m[1].trim();
};
// "Elapsed (wall clock) time (h:mm:ss or m:ss)": 7:12.34
const wall = field('Elapsed (wall clock) time (h:mm:ss or m:ss)')
  .split(':')
  .reduce((acc, part) => acc * 60 + Number(part), 0);
const figures = {
  command: 'node_modules/.bin/node bench/coldbuild.ts',
  commit,
  wallSeconds: Math.round(wall),
  userCpuSeconds: Math.round(Number(field('User time (seconds)'))),
  systemCpuSeconds: Math.round(Number(field('System time (seconds)'))),
  peakRssGB: +(Number(field('Maximum resident set size (kbytes)')) / 1e6).toFixed(1),
};
console.log(
  `cold build: ${figures.wallSeconds} s wall, ${figures.userCpuSeconds} s user CPU, ${figures.systemCpuSeconds} s system, peak RSS ${figures.peakRssGB} GB`,
);
writeResults(out, figures, { loadAverageAtStart: loadAtStart });
