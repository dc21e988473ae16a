/**
 * A helper's process tree, read from /proc, and how a timeout ends it.
 *
 * The runner makes the helper a child subreaper (see runner.ts), so while the
 * helper is alive every process it started, however it detached (setsid,
 * double fork, a new process group), has the helper as an ancestor: its
 * parent chain in /proc/PID/stat leads to the helper's pid. killTree() stops
 * that tree, sweeping /proc until every member is seen stopped (a stopped
 * process cannot fork, and a stopped parent cannot reap, so no pid of the
 * tree is freed and reused meanwhile), then SIGKILLs it, the root last: once
 * the root dies, whatever is left below it is re-parented to init and out of
 * reach.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** One process as /proc/PID/stat describes it. */
export interface ProcEntry {
  readonly pid: number;
  readonly ppid: number;
  /** The state letter: R, S, D, T (stopped), t (traced), Z (zombie), X (dead), ... */
  readonly state: string;
}

/**
 * Parses /proc/PID/stat. The command name (field 2) is in parentheses and may
 * itself hold spaces and parentheses, so the fields after it are read from
 * the last `)`. Undefined for text that is not a stat line.
 */
export function parseStat(text: string): ProcEntry | undefined {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const pid = Number(text.slice(0, open));
  const [state, ppid] = text
    .slice(close + 2)
    .split(' ')
    .slice(0, 2);
  if (!Number.isInteger(pid) || state === undefined || ppid === undefined || !/^\d+$/.test(ppid)) {
    return undefined;
  }
  return { pid, ppid: Number(ppid), state };
}

/** Every process visible in `procDir`; processes that vanish while being read are left out. */
export function listProcesses(procDir = '/proc'): ProcEntry[] {
  const entries: ProcEntry[] = [];
  for (const name of readdirSync(procDir)) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const entry = parseStat(readFileSync(`${procDir}/${name}/stat`, 'utf8'));
      if (entry) entries.push(entry);
    } catch {
      // Exited meanwhile.
    }
  }
  return entries;
}

/** The descendants of `root` among `processes` (root itself excluded), parents before children. Pure. */
export function descendants(root: number, processes: readonly ProcEntry[]): ProcEntry[] {
  const children = new Map<number, ProcEntry[]>();
  for (const p of processes) {
    if (p.pid === p.ppid) continue;
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const out: ProcEntry[] = [];
  const seen = new Set([root]);
  const queue = [root];
  for (let pid = queue.shift(); pid !== undefined; pid = queue.shift()) {
    for (const child of children.get(pid) ?? []) {
      if (seen.has(child.pid)) continue;
      seen.add(child.pid);
      out.push(child);
      queue.push(child.pid);
    }
  }
  return out;
}

/** States in which a process can no longer fork or reap: stopped, traced, zombie, dead. */
const SETTLED = new Set(['T', 't', 'Z', 'X']);

/**
 * Sweeps of /proc before killing anyway: a process in uninterruptible sleep
 * (D) stops only when its system call returns, and a SIGKILL sent meanwhile
 * still takes it down then. A sweep costs one read per process on the node.
 */
const MAX_SWEEPS = 50;
const SWEEP_INTERVAL_MS = 2;

/** How killTree() ended. */
export interface TreeKill {
  /** Pids of the descendants that were SIGKILLed (root excluded). */
  readonly killed: number[];
  /** True when every member was seen stopped before the kill; false when MAX_SWEEPS ran out. */
  readonly settled: boolean;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // ESRCH: gone already.
  }
}

/**
 * Stops `root`, its process group and all its descendants, then SIGKILLs
 * them, descendants first and `root` (with its group) last. The caller must
 * guarantee that `root` is not reaped yet (it is the caller's child), so its
 * pid cannot have been reused. Never throws.
 */
export async function killTree(root: number, procDir = '/proc'): Promise<TreeKill> {
  signal(-root, 'SIGSTOP');
  signal(root, 'SIGSTOP');
  const stopped = new Set<number>();
  let members: ProcEntry[] = [];
  let settled = false;
  for (let sweep = 0; sweep < MAX_SWEEPS && !settled; sweep++) {
    let all: ProcEntry[];
    try {
      all = listProcesses(procDir);
    } catch {
      break; // No /proc: the group kill below is all there is.
    }
    members = descendants(root, all);
    for (const p of members) {
      if (!stopped.has(p.pid)) {
        stopped.add(p.pid);
        signal(p.pid, 'SIGSTOP');
      }
    }
    const rootEntry = all.find((p) => p.pid === root);
    settled =
      (rootEntry === undefined || SETTLED.has(rootEntry.state)) && members.every((p) => SETTLED.has(p.state));
    if (!settled) await sleep(SWEEP_INTERVAL_MS);
  }
  const killed = members.filter((p) => p.state !== 'Z' && p.state !== 'X').map((p) => p.pid);
  for (const pid of killed) signal(pid, 'SIGKILL');
  signal(-root, 'SIGKILL');
  signal(root, 'SIGKILL');
  return { killed, settled };
}
