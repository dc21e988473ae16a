/**
 * Results files: every figure the README states comes from a committed JSON
 * file that a documented command writes (test/readme-figures.test.ts checks
 * the README's Benchmarks table against them). This is the one writer:
 *
 * - `writeResults(path, figures)`: a command that measures one thing writes
 *   its whole file (bench/burst.ts, bench/controlplane.ts, bench/repeat.ts);
 * - `recordResults(path, section, figures)`: several steps of one command
 *   each add their section to a shared file (`make e2e`: test/e2e/image.sh
 *   records the image builds, test/e2e/e2e.test.ts the node and the pods, the
 *   test reporter the suite's counts and time). From a shell script:
 *   `node_modules/.bin/node test/support/results.ts record FILE SECTION key=value...`
 *   (values that read as numbers are stored as numbers).
 *
 * Each file carries the machine it was measured on, with the load average at
 * the time: figures from a busy machine say so.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';

/** The machine a figure was measured on. */
export interface Machine {
  cpus: string;
  memoryGiB: number;
  /** 1, 5 and 15 minute load averages when the figures were written (2 cores: above 2 is busy). */
  loadAverage: number[];
  node: string;
  date: string;
}

/** The machine now. */
export function machine(): Machine {
  return {
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    loadAverage: loadavg().map((x) => +x.toFixed(2)),
    node: process.version,
    date: new Date().toISOString(),
  };
}

/** The path a command writes its results to: `BENCH_RESULTS` if set (tests point it elsewhere), else `fallback`. */
export function resultsPath(fallback: string, env = process.env.BENCH_RESULTS): string {
  return env || fallback;
}

/** Writes `{ machine, ...figures }` to `path` (whole file) and says so on stdout. */
export function writeResults(path: string, figures: Record<string, unknown>, extraMachine = {}): void {
  writeFileSync(
    path,
    `${JSON.stringify({ machine: { ...machine(), ...extraMachine }, ...figures }, null, 2)}\n`,
  );
  console.log(`wrote ${path}`);
}

/**
 * Adds (or replaces) `section` of the shared results file at `path`, keeping the other sections;
 * the section gets the machine it was measured on.
 */
export function recordResults(path: string, section: string, figures: Record<string, unknown>): void {
  const current = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>) : {};
  const next = { ...current, [section]: { ...figures, machine: machine() } };
  writeFileSync(path, `${JSON.stringify(next, null, 2)}\n`);
}

/** `key=value` arguments as figures: numbers where they read as numbers. */
export function parseFigures(args: string[]): Record<string, string | number> {
  const figures: Record<string, string | number> = {};
  for (const arg of args) {
    const eq = arg.indexOf('=');
    if (eq < 1) throw new Error(`expected key=value, got '${arg}'`);
    const value = arg.slice(eq + 1);
    figures[arg.slice(0, eq)] = value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value;
  }
  return figures;
}

// `node test/support/results.ts record FILE SECTION key=value...`, for shell scripts.
if (import.meta.main) {
  const [verb, path, section, ...rest] = process.argv.slice(2);
  if (verb !== 'record' || !path || !section) {
    console.error('usage: node test/support/results.ts record FILE SECTION key=value...');
    process.exit(2);
  }
  recordResults(path, section, parseFigures(rest));
}
