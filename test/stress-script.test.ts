/**
 * scripts/stress-test.sh (`make stress-test`), with a stand-in for `make test`
 * (running the real suite three times from inside the suite would never end):
 * the command runs the given number of times while stress-ng's workers are
 * alive, a failed run fails the script, and stress-ng is gone afterwards
 * whichever way the script ended: success, failure or SIGTERM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { eventually } from './support/cluster.ts';

const script = resolve(import.meta.dirname, '../scripts/stress-test.sh');

function workdir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-stress-test-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs the script with `command` as the stand-in for `make test`; resolves with its exit and output. */
function runScript(
  command: string,
  runs: number,
  onOutput?: (out: string) => void,
): { done: Promise<{ code: number | null; out: string }>; pid: number } {
  const child = spawn('bash', [script], {
    env: {
      ...process.env,
      STRESS_TEST_RUNS: String(runs),
      STRESS_TEST_CPUS: '1',
      STRESS_TEST_COMMAND: command,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
    onOutput?.(out);
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  return {
    done: new Promise((r) => child.once('close', (code) => r({ code, out }))),
    pid: child.pid ?? 0,
  };
}

/** Waits until no process of process group `pgid` is left (workers may outlive their leader by a moment). */
function groupGone(what: string, pgid: number): Promise<boolean> {
  assert.ok(pgid > 0, `a process group for ${what}`);
  return eventually(`${what} (process group ${pgid}) to be gone`, () => {
    try {
      process.kill(-pgid, 0);
      return false;
    } catch {
      return true;
    }
  });
}

const stressPid = (out: string) => Number(/stress-ng --cpu 1 running \(pid (\d+)\)/.exec(out)?.[1]);

// Each run waits for stress-ng's worker to be up (a group of two: stress-ng and its worker), then
// appends the pid it was given: what it ran under, seen from inside the run.
const RECORD = (log: string) =>
  `until [ "$(pgrep -g "$STRESS_NG_PID" | wc -l)" -ge 2 ]; do sleep 0.1; done; echo "$STRESS_NG_PID" >> ${log}`;

test('make stress-test’s script runs the command the given number of times under stress-ng, then stops it', async () => {
  const log = join(workdir(), 'runs');
  const { code, out } = await runScript(RECORD(log), 2).done;
  assert.equal(code, 0, out);
  const pid = stressPid(out);
  assert.ok(pid > 0, out);
  assert.deepEqual(
    readFileSync(log, 'utf8').trim().split('\n'),
    [String(pid), String(pid)],
    'two runs, both under it',
  );
  assert.match(out, /2 of 2 runs passed under stress-ng --cpu 1/);
  await groupGone('stress-ng and its workers', pid);
});

test('a failed run fails the stress script at once and still stops stress-ng', async () => {
  const log = join(workdir(), 'runs');
  const { code, out } = await runScript(`${RECORD(log)}; exit 3`, 3).done;
  assert.equal(code, 1, out);
  assert.match(out, /run 1 of 3 FAILED \(exit 3\)/);
  assert.equal(readFileSync(log, 'utf8').trim().split('\n').length, 1, 'no run after the failed one');
  const pid = stressPid(out);
  assert.ok(pid > 0, out);
  await groupGone('stress-ng and its workers', pid);
});

test('SIGTERM to the stress script stops the run under way and stress-ng', async () => {
  const dir = workdir();
  const log = join(dir, 'runs');
  // The run records itself and its own process group, then would go on for a long time.
  const script = runScript(`${RECORD(log)}; echo "$$" > ${dir}/run-pid; sleep 600`, 1);
  await eventually('the run to be under way', () => existsSync(join(dir, 'run-pid')));
  const runPid = Number(readFileSync(join(dir, 'run-pid'), 'utf8'));
  process.kill(script.pid, 'SIGTERM');
  const { code, out } = await script.done;
  assert.equal(code, 143, out);
  await groupGone('stress-ng and its workers', stressPid(out));
  await groupGone('the run and its children', runPid);
});
