/**
 * The kernel's own words about a run: its log lines about the run's modules,
 * printed while the helper ran (`loop: 'abc' invalid for parameter
 * 'max_loop'`, `dummy: module verification failed: ...`).
 *
 * Read with `dmesg -S -k` (util-linux): `-S` reads through syslog(2), the one
 * way open to a container (the device cgroup keeps /dev/kmsg out of it), which
 * needs CAP_SYSLOG where `kernel.dmesg_restrict=1` (Debian's default); `-k`
 * keeps kernel-facility records only, so a line a process wrote to /dev/kmsg
 * cannot pose as the kernel's.
 *
 * Which lines belong to a run is decided in the log's own clock: the newest
 * timestamp in the log right before the helper started is the run's mark, and
 * only later lines count. (Comparing printk timestamps with /proc/uptime
 * would drift: printk's clock is not NTP-disciplined, which is why `dmesg -T`
 * is off by minutes on a node that has been up for months.) Of those, a line
 * counts when it starts with one of the run's module names (`NAME:`, as the
 * kernel's pr_fmt prints them), or when it is a loader line that names no
 * module but explains the errno the helper got (`Loading of unsigned module
 * is rejected` with EKEYREJECTED).
 *
 * The lines are hostile text (a module's own messages): control characters
 * are stripped and the result bounded (MAX_KERNEL_LOG_BYTES/LINES). Parsing
 * and selection are pure; `KernelLog` runs dmesg.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { stripControl } from '../api/text.ts';
import { MAX_KERNEL_LOG_BYTES, MAX_KERNEL_LOG_LINES } from '../api/types.ts';
import { HELPER_ENV } from '../helper/runner.ts';
import { normalizeModuleName } from '../policy/modulepolicy.ts';

/** One record of the kernel log: its printk timestamp (seconds since boot) and text. */
export interface KernelRecord {
  readonly time: number;
  readonly text: string;
}

/** The most records kept from one read (the newest); a node's buffer holds a few thousand. */
const MAX_RECORDS = 20_000;

/** A line as the status may show it: control characters removed (src/api/text.ts), tabs as spaces, trimmed. */
export function sanitizeLine(text: string): string {
  return stripControl(text)
    .replace(/[\t\n]/g, ' ')
    .trim();
}

/** One line of `dmesg` output (`[  123.456789] text`), or undefined for a line without a timestamp. */
export function parseDmesgLine(line: string): KernelRecord | undefined {
  const m = /^\[\s*(\d+)\.(\d+)\]\s?(.*)$/.exec(line);
  if (!m?.[1] || m[2] === undefined) return undefined;
  return { time: Number(`${m[1]}.${m[2]}`), text: m[3] ?? '' };
}

/** Parses `dmesg` output; a line without a timestamp continues the record before it. Pure. */
export function parseDmesg(text: string): KernelRecord[] {
  const out: KernelRecord[] = [];
  for (const line of text.split('\n')) {
    const r = parseDmesgLine(line);
    if (r) out.push(r);
    else if (line.trim() !== '' && out.length) {
      const last = out[out.length - 1] as KernelRecord;
      out[out.length - 1] = { time: last.time, text: `${last.text} ${line.trim()}` };
    }
  }
  return out;
}

/**
 * Loader lines that name no module, by the errno they explain (kernel/module/signing.c,
 * security/lockdown): included only when the run got that errno.
 */
const LOADER_LINES: Readonly<Record<string, RegExp>> = {
  EKEYREJECTED: /^(Loading of .* is rejected|Lockdown: )/,
  EPERM: /^Lockdown: /,
  ENOKEY: /^Loading of .* is rejected/,
};

/** What a run's log lines are picked by. */
export interface Selection {
  /** The run's mark: only records after it count. */
  readonly after: number;
  /** The run's modules (resolved set or the name asked). */
  readonly modules: readonly string[];
  /** The errno of the refused call, when known (pairs loader lines that name no module). */
  readonly errno?: string;
}

/** True when `text` is about `module`: it starts with the module's name and a ':', ' ' or '('. */
function names(text: string, module: string): boolean {
  const variants = new Set([module, normalizeModuleName(module), module.replaceAll('_', '-')]);
  for (const v of variants) {
    if (text.startsWith(v) && /^[: (]/.test(text.slice(v.length))) return true;
  }
  return false;
}

/** The run's lines, oldest first, sanitized, before bounding. Pure. */
export function selectLines(records: readonly KernelRecord[], sel: Selection): string[] {
  const loader = sel.errno ? LOADER_LINES[sel.errno] : undefined;
  const out: string[] = [];
  for (const r of records) {
    if (!(r.time > sel.after)) continue;
    const text = sanitizeLine(r.text);
    if (text === '') continue;
    if (sel.modules.some((m) => names(text, m)) || loader?.test(text)) out.push(text);
  }
  return out;
}

/** The newest lines within MAX_KERNEL_LOG_LINES and MAX_KERNEL_LOG_BYTES, one per line. Pure. */
export function boundLines(lines: readonly string[]): string {
  const kept: string[] = [];
  let bytes = 0;
  for (const line of [...lines].reverse()) {
    if (kept.length >= MAX_KERNEL_LOG_LINES) break;
    // A single line longer than the whole budget is cut, not dropped: it is the newest.
    const text = kept.length === 0 ? truncateBytes(line, MAX_KERNEL_LOG_BYTES) : line;
    const size = Buffer.byteLength(text) + (kept.length ? 1 : 0);
    if (bytes + size > MAX_KERNEL_LOG_BYTES) break;
    kept.unshift(text);
    bytes += size;
  }
  return kept.join('\n');
}

/** `text` cut to at most `max` bytes of UTF-8, on a character boundary. */
export function truncateBytes(text: string, max: number): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = text.slice(0, max);
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}

/** The line to quote in a status message: the newest about the refused module, else the newest. */
export function quotedLine(lines: readonly string[], module: string | undefined): string | undefined {
  return (module ? lines.findLast((l) => names(l, module)) : undefined) ?? lines.at(-1);
}

/**
 * Reads the kernel log with dmesg, for marks and for runs' lines. Reads are
 * shared: runs starting together share one mark read, runs finishing together
 * one line read (a read started after the last of them finished), so a burst
 * of runs costs a few reads, not two per run. Never rejects: an unreadable log
 * (no CAP_SYSLOG, no dmesg) gives no mark and no lines, and is reported once
 * through `onError`.
 */
export class KernelLog {
  readonly #dmesg: string;
  readonly #onError: (message: string) => void;
  #reported = false;
  /** The read in flight, and the one queued to start after it. */
  #inFlight: Promise<KernelRecord[] | undefined> | undefined;
  #queued: Promise<KernelRecord[] | undefined> | undefined;

  /** @param dmesg absolute path of util-linux dmesg */
  constructor(dmesg: string, onError: (message: string) => void = () => {}) {
    this.#dmesg = dmesg;
    this.#onError = onError;
  }

  /** The newest timestamp in the log now (a run's mark), or undefined when the log cannot be read. */
  async mark(): Promise<number | undefined> {
    // A read already under way is recent enough: an earlier mark only widens the window, and the
    // lines are picked by module name too.
    const records = await (this.#inFlight ?? this.#start());
    if (!records) return undefined;
    return records.at(-1)?.time ?? 0;
  }

  /** The records of a read that starts after this call (so it sees everything printed before it). */
  records(): Promise<KernelRecord[] | undefined> {
    if (!this.#inFlight) return this.#start();
    // The read under way may have started before this call: wait for the one after it.
    this.#queued ??= this.#inFlight.then(() => {
      this.#queued = undefined;
      return this.#start();
    });
    return this.#queued;
  }

  #start(): Promise<KernelRecord[] | undefined> {
    const read: Promise<KernelRecord[] | undefined> = this.#read().finally(() => {
      if (this.#inFlight === read) this.#inFlight = undefined;
    });
    this.#inFlight = read;
    return read;
  }

  #read(): Promise<KernelRecord[] | undefined> {
    return new Promise((resolve) => {
      const child = spawn(this.#dmesg, ['-S', '-k'], {
        env: { ...HELPER_ENV },
        cwd: '/',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 10_000,
      });
      const records: KernelRecord[] = [];
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-1000)));
      child.on('error', (err) => this.#fail(`${this.#dmesg}: ${err.message}`, resolve));
      createInterface({ input: child.stdout }).on('line', (line) => {
        const r = parseDmesgLine(line);
        if (r) records.push(r);
        else if (line.trim() !== '' && records.length) {
          const last = records[records.length - 1] as KernelRecord;
          records[records.length - 1] = { time: last.time, text: `${last.text} ${line.trim()}` };
        }
        if (records.length > MAX_RECORDS) records.splice(0, records.length - MAX_RECORDS);
      });
      child.on('close', (code) => {
        if (code === 0) resolve(records);
        else
          this.#fail(
            `${this.#dmesg} -S -k exited ${code}: ${sanitizeLine(stderr.trim().split('\n').pop() ?? '')}`,
            resolve,
          );
      });
    });
  }

  #fail(message: string, resolve: (v: undefined) => void): void {
    if (!this.#reported) {
      this.#reported = true;
      this.#onError(message);
    }
    resolve(undefined);
  }
}
