/**
 * The agent's one way to ask modprobe what a request loads (resolve.ts), with
 * what keeps that cheap under load (issue 18, finding 3):
 *
 * - a bound: at most `concurrency` resolutions at once (each is two short
 *   modprobe processes), real loads ahead of dry runs and one place kept for
 *   them (limiter.ts);
 * - the node's configuration (install lines, blacklists) read from
 *   `modprobe -c` once per change of the files modprobe reads, not per request;
 * - resolutions remembered per name asked (a bounded LRU), also keyed on that
 *   fingerprint: a changed modprobe.d file or a depmod run is seen by the next
 *   resolution, because the fingerprint (inode, size, mtime of every config
 *   file and module index) is taken afresh for every one.
 *
 * Its `resolve()` never rejects, as resolveModule() never does.
 */
import { Limiter, type Priority } from './limiter.ts';
import {
  configFingerprint,
  readNodeConfig,
  resolveModule,
  type NodeConfig,
  type Resolution,
  type Resolver,
} from './resolve.ts';

/** Names whose resolution is remembered, by default. */
export const DEFAULT_RESOLUTION_CACHE = 256;
/** Resolutions (modprobe's read-only questions) at once on a node: each is two short modprobe processes. */
export const DEFAULT_RESOLVE_CONCURRENCY = 4;

/** How a NodeResolver is set up. */
export interface NodeResolverOptions {
  /** Resolutions running at once (default DEFAULT_RESOLVE_CONCURRENCY). */
  concurrency?: number;
  /** Names whose resolution is remembered (default DEFAULT_RESOLUTION_CACHE; 0 remembers none). */
  cacheSize?: number;
  /** The fingerprint of what modprobe reads; tests inject one. Default configFingerprint(). */
  fingerprint?: (args: readonly string[]) => string;
}

/** Counters, for tests and the benchmark: what the cache saved. */
export interface NodeResolverStats {
  /** `modprobe -c` reads (one per configuration change). */
  configReads: number;
  /** Resolutions that ran modprobe. */
  resolutions: number;
  /** Resolutions answered from the cache. */
  cacheHits: number;
}

/** See the module comment. */
export class NodeResolver {
  /** The modprobe and flags asked; the helper gets the same flags. */
  readonly resolver: Resolver;
  readonly #limiter: Limiter;
  readonly #cacheSize: number;
  readonly #fingerprint: (args: readonly string[]) => string;
  #config: { key: string; value: Promise<NodeConfig> } | undefined;
  /** Name asked → its resolution under one fingerprint; Map order is the LRU order. */
  readonly #cache = new Map<string, { key: string; value: Resolution }>();
  readonly stats: NodeResolverStats = { configReads: 0, resolutions: 0, cacheHits: 0 };

  constructor(resolver: Resolver, opts: NodeResolverOptions = {}) {
    this.resolver = resolver;
    const concurrency = opts.concurrency ?? DEFAULT_RESOLVE_CONCURRENCY;
    // One place kept for real loads (when there are two or more): a burst of dry runs never makes
    // a load wait for a dry run's modprobe to finish.
    this.#limiter = new Limiter(concurrency, concurrency > 1 ? 1 : 0);
    this.#cacheSize = opts.cacheSize ?? DEFAULT_RESOLUTION_CACHE;
    this.#fingerprint = opts.fingerprint ?? configFingerprint;
  }

  /** Resolutions running and waiting now. */
  get load(): { running: number; waiting: number } {
    return { running: this.#limiter.running, waiting: this.#limiter.waiting };
  }

  /**
   * What modprobe would load for `module` on this node now. `priority`: `high` for a run about
   * to load or remove, `low` for a dry run.
   */
  resolve(module: string, priority: Priority): Promise<Resolution> {
    return this.#limiter.run(priority, async () => {
      const key = this.#fingerprint(this.resolver.args);
      const hit = this.#cache.get(module);
      if (hit && hit.key === key) {
        this.stats.cacheHits++;
        this.#cache.delete(module);
        this.#cache.set(module, hit);
        return hit.value;
      }
      let config: NodeConfig;
      try {
        config = await this.#nodeConfig(key);
      } catch (err) {
        return {
          ok: false,
          requested: module,
          error: `cannot read the node's modprobe configuration: ${(err as Error).message}`,
        };
      }
      this.stats.resolutions++;
      const value = await resolveModule(this.resolver, module, config);
      // Remembered only when nothing changed while modprobe ran, and only a resolved set: a
      // failure may be passing (a timeout on a busy node) and is asked again next time.
      if (value.ok && this.#cacheSize > 0 && this.#fingerprint(this.resolver.args) === key) {
        this.#cache.delete(module);
        this.#cache.set(module, { key, value });
        while (this.#cache.size > this.#cacheSize) {
          const oldest = this.#cache.keys().next().value;
          if (oldest === undefined) break;
          this.#cache.delete(oldest);
        }
      }
      return value;
    });
  }

  /** The node's configuration under fingerprint `key`: read once per key (concurrent callers share the read). */
  #nodeConfig(key: string): Promise<NodeConfig> {
    if (this.#config?.key !== key) {
      this.stats.configReads++;
      const value = readNodeConfig(this.resolver);
      this.#config = { key, value };
      // A failed read is not kept: the next resolution tries again.
      value.catch(() => {
        if (this.#config?.value === value) this.#config = undefined;
      });
    }
    return this.#config.value;
  }
}
