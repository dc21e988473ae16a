/**
 * client-node's Watch with the two knobs its ListWatch does not expose:
 *
 * - the inactivity timeout. Watch aborts a watch that received no bytes for
 *   `requestTimeoutMs` (30 s, a private field) and ListWatch reconnects from
 *   the last resourceVersion: that is the watchdog that rescues a watch whose
 *   connection went silent (a frozen proxy or load balancer keeps the socket
 *   open but forwards nothing; TCP keepalive does not notice). The field is
 *   set once, here, and checked so that a library upgrade that renames it
 *   fails loudly instead of silently reverting to 30 s.
 * - `allowWatchBookmarks=true`. The apiserver then sends a BOOKMARK roughly
 *   every minute whenever the resource's resourceVersion moved on, and
 *   ListWatch stores its resourceVersion. A watch with a narrow selector
 *   (an agent's own node) otherwise keeps the resourceVersion of its last
 *   event, which on a busy cluster soon falls out of the watch cache window,
 *   so every reconnect would end in 410 Gone and a full relist. Bookmarks are
 *   also the traffic that keeps a healthy quiet watch under the inactivity
 *   timeout, when that timeout is longer than the bookmark period.
 *
 * It also takes a `transform` that sees every object before the callback
 * does (the informer strips managedFields with it; see informer.ts).
 */
import { type KubeConfig, Watch } from '@kubernetes/client-node';

/** Default inactivity timeout: longer than the ~60 s bookmark period, see the module comment. */
export const DEFAULT_WATCH_TIMEOUT_MS = 90_000;

/** A Watch with a configurable inactivity timeout that asks for bookmarks. */
export class BookmarkingWatch extends Watch {
  readonly #open = new Set<AbortController>();
  #closed = false;

  readonly #transform: ((obj: unknown) => void) | undefined;

  /** `transform` is called on each watched object (ADDED, MODIFIED, DELETED; in place) before `callback` sees it. */
  constructor(
    kc: KubeConfig,
    inactivityTimeoutMs = DEFAULT_WATCH_TIMEOUT_MS,
    transform?: (obj: unknown) => void,
  ) {
    super(kc);
    // 0, NaN or a negative timeout would abort every watch at once: a reconnect loop.
    if (!Number.isFinite(inactivityTimeoutMs) || inactivityTimeoutMs <= 0)
      throw new Error(
        `watch inactivity timeout (watchTimeoutMs) must be a positive number of ms, got ${inactivityTimeoutMs}`,
      );
    this.#transform = transform;
    if (typeof Reflect.get(this, 'requestTimeoutMs') !== 'number') {
      throw new Error(
        '@kubernetes/client-node Watch has no requestTimeoutMs any more; update src/kube/watch.ts',
      );
    }
    Reflect.set(this, 'requestTimeoutMs', inactivityTimeoutMs);
  }

  /** The watch inactivity timeout in force, in ms. */
  get inactivityTimeoutMs(): number {
    return Number(Reflect.get(this, 'requestTimeoutMs'));
  }

  /**
   * Aborts every watch this instance has open and refuses new ones (their
   * `done` is called with an AbortError). ListWatch.stop() alone misses a
   * watch that is still connecting: its AbortController only reaches
   * ListWatch once the response headers are in, so the watch would run on.
   */
  close(): void {
    this.#closed = true;
    for (const ctl of this.#open) ctl.abort();
    this.#open.clear();
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    if (this.#closed) {
      const ctl = new AbortController();
      ctl.abort();
      done(new DOMException('watch closed', 'AbortError'));
      return ctl;
    }
    // `done` may run before super.watch() returns (a failed connect): no controller to forget yet.
    const state: { ctl?: AbortController; ended: boolean } = { ended: false };
    const transform = this.#transform;
    const deliver = transform
      ? (phase: string, apiObj: unknown, watchObj?: unknown) => {
          // Objects only: a BOOKMARK carries just a resourceVersion, an ERROR a Status.
          if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') transform(apiObj);
          callback(phase, apiObj, watchObj);
        }
      : callback;
    const ctl = await super.watch(path, { ...queryParams, allowWatchBookmarks: true }, deliver, (err) => {
      state.ended = true;
      if (state.ctl) this.#open.delete(state.ctl);
      done(err);
    });
    state.ctl = ctl;
    if (this.#closed) ctl.abort();
    else if (!state.ended) this.#open.add(ctl);
    return ctl;
  }
}
