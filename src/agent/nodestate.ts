/**
 * Whether helpers may start on this node: the kernel's usermodehelper
 * states (UMH_ENABLED / UMH_FREEZING / UMH_DISABLED), set per node through
 * the `kmod.dev/helpers` annotation by maintenance tooling or a person.
 *
 * - Enabled: helpers start.
 * - Freezing: new runs wait (they do not fail); helpers already running go on.
 * - Disabled: new runs stay pending until the node is enabled again, and
 *   disabling first drains running helpers: if they do not finish within
 *   the drain timeout, the node goes back to Enabled and the disable fails,
 *   as __usermodehelper_disable() returns -EAGAIN.
 *
 * The agent starts Disabled and enables only once its caches are synced and
 * interrupted runs can be recognised (helpers start UMH_DISABLED until boot
 * has finished).
 */
import { DEFAULT_DRAIN_TIMEOUT_MS } from './defaults.ts';

export type HelperState = 'Enabled' | 'Freezing' | 'Disabled';
export const HELPER_STATES: readonly HelperState[] = ['Enabled', 'Freezing', 'Disabled'];

/** Desired state, set on the Node by people or maintenance tooling. */
export const HELPERS_ANNOTATION = 'kmod.dev/helpers';
/** Actual state, reported by the agent. */
export const HELPERS_STATE_ANNOTATION = 'kmod.dev/helpers-state';
/** What the last transition did, reported by the agent. */
export const HELPERS_MESSAGE_ANNOTATION = 'kmod.dev/helpers-message';

/** Parses the annotation; undefined (absent) means Enabled; anything else is an error naming the value. */
export function parseHelperState(value: string | undefined): HelperState {
  if (value === undefined || value === '') return 'Enabled';
  const match = HELPER_STATES.find((s) => s.toLowerCase() === value.trim().toLowerCase());
  if (!match) throw new Error(`${HELPERS_ANNOTATION}="${value}" is not one of ${HELPER_STATES.join(', ')}`);
  return match;
}

export interface TransitionResult {
  state: HelperState;
  ok: boolean;
  message: string;
}

/**
 * The node's helper gate. `whenEnabled()` is what a run waits on before it
 * takes a helper slot; `set()` moves between states.
 */
export class NodeHelperState {
  #state: HelperState = 'Disabled';
  #waiters = new Set<() => void>();
  readonly #running: () => number;
  readonly #idle: () => Promise<void>;

  /**
   * @param running how many helpers run right now
   * @param idle resolves when none run
   */
  constructor(running: () => number, idle: () => Promise<void>) {
    this.#running = running;
    this.#idle = idle;
  }

  get state(): HelperState {
    return this.#state;
  }

  /** Runs waiting in `whenEnabled()` right now (held while Freezing or Disabled). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /**
   * Resolves true as soon as helpers may start; false when `maxWaitMs`
   * passes first (the run stays pending), or when `signal` aborts.
   * Enabled resolves at once; Freezing and Disabled wait.
   */
  whenEnabled(maxWaitMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.#state === 'Enabled') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (v: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        signal?.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const wake = () => done(true);
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), maxWaitMs);
      this.#waiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Moves to `target`. To Disabled: stops new helpers at once, then waits up
   * to `drainTimeoutMs` for running ones; if they are still running the
   * node reverts to Enabled and the result says so (ok: false).
   */
  async set(target: HelperState, drainTimeoutMs = DEFAULT_DRAIN_TIMEOUT_MS): Promise<TransitionResult> {
    if (target === 'Enabled') {
      this.#state = 'Enabled';
      for (const wake of [...this.#waiters]) wake();
      return { state: 'Enabled', ok: true, message: 'helpers enabled' };
    }
    if (target === 'Freezing') {
      this.#state = 'Freezing';
      return {
        state: 'Freezing',
        ok: true,
        message: 'helpers freezing: new runs wait, running helpers go on',
      };
    }
    this.#state = 'Disabled';
    const running = this.#running();
    if (running === 0)
      return { state: 'Disabled', ok: true, message: 'helpers disabled: new runs stay pending' };
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.#idle().then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), drainTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (drained)
      return {
        state: 'Disabled',
        ok: true,
        message: `helpers disabled after ${running} running helper(s) finished`,
      };
    // __usermodehelper_disable(): helpers still running after the timeout → re-enable, -EAGAIN.
    const still = this.#running();
    await this.set('Enabled');
    return {
      state: 'Enabled',
      ok: false,
      message: `disable failed (EAGAIN): ${still} helper(s) still running after ${drainTimeoutMs / 1000} s; helpers re-enabled`,
    };
  }
}
