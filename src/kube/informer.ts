/**
 * A typed, self-healing cache of one resource path, over client-node's
 * ListWatch.
 *
 * What ListWatch does by itself: list, then watch from the list's
 * resourceVersion; relist on 410 Gone; reconnect after a clean close or an
 * inactivity timeout. What it does not, and this class adds:
 *
 * - restart: any other error (apiserver down, 429 while a new CRD's storage
 *   initialises, 500, connection refused) calls the 'error' callbacks and
 *   STOPS the ListWatch for good. Here it is restarted with exponential
 *   backoff (1 s → 30 s by default), keeping the cache: the watch resumes
 *   from the last resourceVersion, and a relist (on 410) reports the
 *   differences as add/update/delete.
 * - a list that honours the same field and label selectors as the watch,
 *   pages through large collections, and has a deadline (a list hanging on
 *   a half-open connection would otherwise stall the informer forever);
 * - handler isolation: a handler that throws (or rejects) is logged; inside
 *   ListWatch a throw would skip the remaining handlers and the
 *   resourceVersion update, or escape as an unhandled rejection;
 * - a periodic resync that re-delivers every cached object as 'update', the
 *   level-triggered safety net for anything a handler dropped;
 * - a configurable watch inactivity timeout and bookmarks (see watch.ts);
 * - a transform applied to every object before it is cached, by default
 *   stripManagedFields (client-go's TransformStripManagedFields): nothing in
 *   the operator reads managedFields, and they are a large part of every
 *   cached object's JSON (bench/RESULTS.md), held for the life of the
 *   process.
 */
import {
  ListWatch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type winston from 'winston';
import { errorMessage } from '../observability/logger.ts';
import { isGone, statusCode } from './errors.ts';
import { getJson } from './request.ts';
import { BookmarkingWatch, DEFAULT_WATCH_TIMEOUT_MS } from './watch.ts';

/**
 * Deadline for one list request (each page): a list hanging on a half-open connection must fail
 * and be retried rather than stall the informer.
 */
const LIST_TIMEOUT_MS = 60_000;

/** The object events an Informer delivers. */
export type InformerEvent = 'add' | 'update' | 'delete';

/** How an Informer is set up. */
export interface InformerOptions<T> {
  kc: KubeConfig;
  /** Collection path, e.g. '/apis/kmod.dev/v1alpha1/moduleruns' or '/api/v1/nodes'. */
  path: string;
  /** Server-side field selector for both list and watch, e.g. 'spec.nodeName=node-1'. */
  fieldSelector?: string;
  /** Server-side label selector for both list and watch. */
  labelSelector?: string;
  logger: winston.Logger;
  /** Backoff between restarts after an error that stopped the watch. Default 1000..30000 ms. */
  restartBackoffMs?: { min: number; max: number };
  /** Re-deliver every cached object as 'update' this often. Default 10 min; 0 = off. */
  resyncMs?: number;
  /** Reconnect a watch that received nothing (not even a bookmark) for this long. Default 90 s. */
  watchTimeoutMs?: number;
  /** Objects per list page. Default 500. */
  listPageSize?: number;
  /**
   * Changes each listed or watched object in place before it is cached and delivered.
   * Default: stripManagedFields. Pass `() => {}` to cache objects exactly as served.
   */
  transform?: (obj: T) => void;
}

/**
 * Deletes metadata.managedFields. Safe for objects that are later written back whole (a PUT of
 * a cached run's status): an update without managedFields keeps the stored ones; only an
 * explicit empty list would clear them.
 */
export function stripManagedFields(obj: unknown): void {
  const meta = (obj as { metadata?: { managedFields?: unknown } } | null)?.metadata;
  if (meta && typeof meta === 'object') delete meta.managedFields;
}

/**
 * An event handler. On 'update' `old` is the object as last delivered (as
 * client-go's UpdateFunc(old, new) has it; a periodic resync delivers the
 * same object as both); on 'add' and 'delete' it is undefined.
 */
export type Handler<T> = (obj: T, old?: T) => void;

/** A list as the apiserver sends it (client-node's generated types rename `continue` to `_continue`). */
interface RawList<T> {
  apiVersion?: string;
  kind?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

/** A deferred promise: start() waits on it until the first list is cached. */
interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // start() may never be awaited; its rejection (stop before sync) must not crash the process.
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** See the module comment. Handlers run synchronously, in registration order, and are not awaited. */
export class Informer<T extends KubernetesObject> {
  readonly #opts: InformerOptions<T>;
  readonly #log: winston.Logger;
  readonly #lw: ListWatch<T>;
  readonly #watch: BookmarkingWatch;
  readonly #handlers: Record<InformerEvent, Handler<T>[]> = { add: [], update: [], delete: [] };
  /** The object each handler last saw, by namespace/name: the `old` of the next update. */
  readonly #delivered = new Map<string, T>();
  readonly #backoff: { min: number; max: number };
  readonly #transform: (obj: T) => void;
  #nextDelay: number;
  #restartTimer: NodeJS.Timeout | undefined;
  #resyncTimer: NodeJS.Timeout | undefined;
  #sync: Deferred = deferred();
  #synced = false;
  #running = false;
  #stopped = false;
  #errors = 0;

  constructor(opts: InformerOptions<T>) {
    this.#opts = opts;
    this.#log = opts.logger.child({
      informer: opts.path,
      fieldSelector: opts.fieldSelector,
      labelSelector: opts.labelSelector,
    });
    this.#backoff = opts.restartBackoffMs ?? { min: 1000, max: 30_000 };
    this.#nextDelay = this.#backoff.min;
    this.#transform = opts.transform ?? stripManagedFields;
    this.#watch = new BookmarkingWatch(
      opts.kc,
      opts.watchTimeoutMs ?? DEFAULT_WATCH_TIMEOUT_MS,
      this.#transform as (obj: unknown) => void,
    );
    this.#lw = new ListWatch<T>(
      opts.path,
      this.#watch,
      () => this.#list(),
      false,
      opts.labelSelector,
      opts.fieldSelector,
    );
    for (const event of ['add', 'update', 'delete'] as const) {
      this.#lw.on(event, (obj: T) => {
        // Events flow again: the next failure starts from the shortest delay.
        this.#nextDelay = this.#backoff.min;
        this.#dispatch(event, obj);
      });
    }
    this.#lw.on('error', (err: unknown) => this.#onError(err));
    this.#lw.on('connect', () => this.#log.debug('watch connecting'));
  }

  /** Registers a handler. Register before start() to see the initial list as 'add' events. */
  on(event: InformerEvent, fn: Handler<T>): void {
    this.#handlers[event].push(fn);
  }

  /**
   * Starts listing and watching. Resolves once the first list is in the cache;
   * until then failures are retried with backoff (so this waits through an
   * apiserver that is still starting). Rejects if stop() is called first.
   * An informer runs once: start() after stop() throws.
   */
  start(): Promise<void> {
    if (this.#stopped) throw new Error(`informer ${this.#opts.path}: start() after stop()`);
    if (!this.#running) {
      this.#running = true;
      this.#scheduleResync();
      void this.#connect();
    }
    return this.#sync.promise;
  }

  /** Stops watching and all timers; no handler is called once this returns. The cache keeps its content. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#running = false;
    clearTimeout(this.#restartTimer);
    clearInterval(this.#resyncTimer);
    this.#restartTimer = undefined;
    this.#resyncTimer = undefined;
    if (!this.#synced) this.#sync.reject(new Error(`informer ${this.#opts.path} stopped before it synced`));
    await this.#lw.stop();
    this.#watch.close(); // also the watch ListWatch cannot abort yet (still connecting)
  }

  /** Every cached object (a copy of the list; the objects themselves are shared, do not mutate them). */
  list(): T[] {
    return [...this.#lw.list()];
  }

  /** The cached object, or undefined. Cluster-scoped objects have no namespace. */
  get(name: string, namespace?: string): T | undefined {
    return this.#lw.get(name, namespace);
  }

  /** True once the first list has been cached (stays true across restarts). */
  get synced(): boolean {
    return this.#synced;
  }

  async #list(): Promise<KubernetesListObject<T>> {
    const { kc, path, fieldSelector, labelSelector } = this.#opts;
    const timeoutMs = LIST_TIMEOUT_MS;
    const items: T[] = [];
    let cont: string | undefined;
    let last: RawList<T>;
    do {
      last = await getJson<RawList<T>>(
        kc,
        path,
        { fieldSelector, labelSelector, limit: this.#opts.listPageSize ?? 500, continue: cont },
        timeoutMs,
      );
      for (const item of last.items ?? []) {
        this.#transform(item);
        items.push(item);
      }
      cont = last.metadata?.continue || undefined;
    } while (cont);
    const resourceVersion = last.metadata?.resourceVersion;
    this.#log.debug('listed', { count: items.length, resourceVersion });
    this.#nextDelay = this.#backoff.min;
    if (!this.#synced) {
      // ListWatch fills its cache from this list in the continuation of our
      // promise (microtasks); setImmediate runs after those, so start()
      // resolves with the objects already in the cache.
      setImmediate(() => this.#markSynced());
    }
    return { apiVersion: last.apiVersion, kind: last.kind, metadata: { resourceVersion }, items };
  }

  #markSynced(): void {
    if (this.#synced || !this.#running) return;
    this.#synced = true;
    this.#log.info('informer synced', { count: this.#lw.list().length });
    this.#sync.resolve();
  }

  async #connect(): Promise<void> {
    if (!this.#running) return;
    const errors = this.#errors;
    try {
      await this.#lw.start();
    } catch (err) {
      // Not expected (ListWatch reports through 'error'); a restart still heals it.
      this.#onError(err);
      return;
    }
    // Connected without an error: the next failure starts from the shortest delay again.
    if (this.#errors === errors && this.#running) this.#nextDelay = this.#backoff.min;
  }

  #onError(err: unknown): void {
    // stop() aborts the watch, and ListWatch reports the abort as an error.
    if (!this.#running) return;
    this.#errors++;
    if (this.#restartTimer) return;
    const delay = this.#nextDelay;
    this.#nextDelay = Math.min(delay * 2, this.#backoff.max);
    this.#log.warn('list/watch failed; restarting', {
      error: errorMessage(err),
      status: statusCode(err),
      gone: isGone(err),
      retryInMs: delay,
    });
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      void this.#connect();
    }, delay);
  }

  #scheduleResync(): void {
    const every = this.#opts.resyncMs ?? 10 * 60_000;
    if (every <= 0) return;
    this.#resyncTimer = setInterval(() => {
      if (!this.#synced) return;
      for (const obj of this.#lw.list()) this.#dispatch('update', obj);
    }, every);
    // A safety net must not keep the process alive on its own.
    this.#resyncTimer.unref();
  }

  #dispatch(event: InformerEvent, obj: T): void {
    if (!this.#running) return; // from a list or watch that outlived stop()
    const key = `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
    const old = this.#delivered.get(key);
    if (event === 'delete') this.#delivered.delete(key);
    else this.#delivered.set(key, obj);
    for (const fn of this.#handlers[event]) {
      try {
        const ret = fn(obj, event === 'update' ? (old ?? obj) : undefined) as unknown;
        if (ret instanceof Promise) ret.catch((err: unknown) => this.#handlerFailed(event, obj, err));
      } catch (err) {
        this.#handlerFailed(event, obj, err);
      }
    }
  }

  #handlerFailed(event: InformerEvent, obj: T, err: unknown): void {
    this.#log.error('informer handler threw', {
      event,
      name: obj.metadata?.name,
      namespace: obj.metadata?.namespace,
      error: errorMessage(err),
    });
  }
}
