/**
 * The process-tree sweep: stat parsing and tree walking as pure functions,
 * and killTree() on a real tree of processes in several sessions.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { descendants, killTree, listProcesses, parseStat, type ProcEntry } from './proctree.ts';

void describe('parseStat', () => {
  void it('reads pid, state and ppid, whatever the command name holds', () => {
    assert.deepEqual(parseStat('42 (sh) S 7 42 42 0 -1 4194560 1 0'), { pid: 42, ppid: 7, state: 'S' });
    // A name may carry spaces and parentheses: the fields after it start at the last ')'.
    assert.deepEqual(parseStat('9 (a) T 1 (b)) Z 3 9 9 0'), { pid: 9, ppid: 3, state: 'Z' });
    assert.deepEqual(parseStat(readFileSync('/proc/self/stat', 'utf8'))?.pid, process.pid);
  });

  void it('refuses what is not a stat line', () => {
    for (const text of ['', 'garbage', '12 (x', 'x (y) S 1', '5 (y) S notanumber']) {
      assert.equal(parseStat(text), undefined, JSON.stringify(text));
    }
  });
});

void describe('descendants', () => {
  const p = (pid: number, ppid: number, state = 'S'): ProcEntry => ({ pid, ppid, state });
  void it('walks children, grandchildren and deeper, parents first, and nothing else', () => {
    const all = [p(1, 0), p(10, 1), p(11, 10), p(12, 10), p(13, 12), p(20, 1), p(21, 20), p(14, 13, 'Z')];
    assert.deepEqual(
      descendants(10, all).map((e) => e.pid),
      [11, 12, 13, 14],
    );
    assert.deepEqual(descendants(21, all), []);
    assert.deepEqual(descendants(99, all), []);
  });

  void it('survives a cycle in bad input', () => {
    assert.deepEqual(
      descendants(1, [p(2, 1), p(3, 2), p(2, 3)]).map((e) => e.pid),
      [2, 3],
    );
  });
});

void describe('killTree', { timeout: 30_000 }, () => {
  void it('stops, then kills a tree spread over several sessions and groups, the root last', async () => {
    // A duration no other sleep on this machine has: it marks the tree's processes.
    const marker = String(200_000 + process.pid);
    // bash stays the parent of everything (no exits in between), so the tree is under it.
    const root = spawn(
      '/bin/bash',
      [
        '-c',
        `setsid sleep ${marker} & setsid bash -c 'sleep ${marker} & wait' & sleep ${marker} & echo ready; wait`,
      ],
      { detached: true, stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const rootPid = root.pid ?? 0;
    await new Promise<void>((resolve) => root.stdout.once('data', () => resolve()));
    const marked = () =>
      listProcesses().filter((e) => {
        try {
          const argv = readFileSync(`/proc/${e.pid}/cmdline`, 'utf8').split('\0');
          return e.state !== 'Z' && argv[0] === 'sleep' && argv[1] === marker;
        } catch {
          return false;
        }
      });
    while (marked().length < 3) await sleep(10);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      root.once('exit', (_code, sig) => resolve(sig)),
    );

    const result = await killTree(rootPid);
    assert.equal(result.settled, true, 'every member was seen stopped before the kill');
    assert.equal(result.killed.length, 4, `killed ${result.killed.join(' ')}`);
    assert.equal(await exited, 'SIGKILL');
    while (marked().length > 0) await sleep(10);
  });

  void it('is harmless on a pid that does not exist (above pid_max: never signalled by mistake)', async () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    assert.deepEqual(await killTree(pidMax + 1), { killed: [], settled: true });
  });
});
