/**
 * Gathers what the kernel shows around one helper run, for outcome.ts to
 * judge: the modules' state right before the helper starts and right after it
 * exits (sysfs.ts), the kernel log's mark before and its lines after
 * (kmsg.ts), and the helper's traced module calls (trace.ts, from the
 * runner's result). The only I/O of the kernel folder's decision; it knows
 * nothing of the NodeModules object.
 */
import { normalizeModuleName } from '../policy/modulepolicy.ts';
import type { KernelLog } from './kmsg.ts';
import { selectLines } from './kmsg.ts';
import type { Evidence } from './outcome.ts';
import { readModules, type KernelModule, type KernelRoots } from './sysfs.ts';
import { failedCall, parseTrace } from './trace.ts';

/** The kernel's state when a run's helper starts. */
export interface Before {
  readonly names: readonly string[];
  readonly states: ReadonlyMap<string, KernelModule>;
  /** The kernel log's mark, or undefined when the log is not read. */
  readonly mark?: number;
}

/** How the witness reads the kernel. */
export interface WitnessOptions {
  /** Where /sys and /proc are (simulated nodes and tests); default the real ones. */
  readonly roots?: KernelRoots;
  /** The kernel log reader; unset = no kernel lines. */
  readonly kernelLog?: KernelLog;
}

/** See the module comment. */
export class KernelWitness {
  readonly #opts: WitnessOptions;

  constructor(opts: WitnessOptions = {}) {
    this.#opts = opts;
  }

  /** Right before the helper starts: the state of `modules` (and the name asked), and the log's mark. */
  async before(modules: readonly string[]): Promise<Before> {
    const names = [...new Set(modules.map(normalizeModuleName))];
    const mark = await this.#opts.kernelLog?.mark();
    return { names, states: readModules(names, this.#opts.roots), ...(mark !== undefined ? { mark } : {}) };
  }

  /**
   * Right after the helper exited: the evidence outcome.ts decides on. `trace` is the runner's
   * tracer output (undefined when no tracer ran).
   */
  async after(
    before: Before,
    trace: string | undefined,
  ): Promise<Pick<Evidence, 'before' | 'after' | 'trace' | 'kernelLines'>> {
    const after = readModules(before.names, this.#opts.roots);
    const parsed = trace !== undefined ? parseTrace(trace) : undefined;
    let kernelLines: string[] = [];
    if (before.mark !== undefined && this.#opts.kernelLog) {
      const records = await this.#opts.kernelLog.records();
      const errno = parsed ? failedCall(parsed)?.errno : undefined;
      if (records)
        kernelLines = selectLines(records, {
          after: before.mark,
          modules: before.names,
          ...(errno ? { errno } : {}),
        });
    }
    return { before: before.states, after, ...(parsed ? { trace: parsed } : {}), kernelLines };
  }
}
