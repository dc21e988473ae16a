/**
 * An event recorder (client-node has none), writing core/v1 Events so that
 * `kubectl describe` and `kubectl get events` show them, after client-go's
 * tools/record:
 *
 * - fire and forget: recording an event never blocks or fails the caller;
 *   write failures are logged. Events are diagnostics, not state.
 * - identical events (same object uid, type, reason, message) within 10
 *   minutes of the previous one are aggregated: the existing Event's `count`
 *   and `lastTimestamp` are patched instead of creating another object (a
 *   run retried every few seconds must not flood etcd).
 * - events about cluster-scoped objects (ModuleRequest, ModuleRun, Node) go
 *   to namespace `default`, as the kubelet does for Nodes.
 * - writes for the same key are serialised, so concurrent identical events
 *   patch one object instead of racing to create two.
 */
import { randomBytes } from 'node:crypto';
import { CoreV1Api, type CoreV1Event, type KubeConfig } from '@kubernetes/client-node';
import type winston from 'winston';
import { boundText, stripControl } from '../api/text.ts';
import { errorMessage } from '../observability/logger.ts';
import { mergePatch, withTimeout } from './callopts.ts';
import { isNotFound } from './errors.ts';

/** How an EventRecorder is set up. */
export interface EventRecorderOptions {
  kc: KubeConfig;
  /** Who reports: source.component and reportingComponent (e.g. 'kmod-controller'). */
  component: string;
  /** Where it runs: source.host and reportingInstance (e.g. the node name). */
  host?: string;
  logger: winston.Logger;
  /** Identical events closer together than this are aggregated. Default AGGREGATION_WINDOW_MS (10 min). */
  aggregationWindowMs?: number;
}

/** The object an event is about: any Kubernetes object, or enough of one. */
export interface EventTarget {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
  /**
   * The part of the object the event is about (involvedObject.fieldPath), as the kubelet writes
   * `spec.containers{NAME}`: an agent's Events on a request are about `status.nodes{NODE}`.
   */
  fieldPath?: string;
}

/** Identical events closer together than this are aggregated into one Event (client-go: 10 min). */
export const AGGREGATION_WINDOW_MS = 10 * 60_000;
/** Aggregation keys remembered (client-go's LRU size). */
const CACHE_ENTRIES = 4096;
/** Longer messages are cut: the newer events API refuses notes over 1 kB, and an Event is no log. */
const MAX_MESSAGE = 1024;
const WRITE_TIMEOUT_MS = 15_000;

interface Recorded {
  name: string;
  namespace: string;
  count: number;
  last: number;
}

/** See the module comment. */
export class EventRecorder {
  readonly #api: CoreV1Api;
  readonly #opts: EventRecorderOptions;
  /** Aggregation key → the Event written for it; Map order doubles as LRU order. */
  readonly #recorded = new Map<string, Recorded>();
  /** Aggregation key → tail of its write chain. */
  readonly #chains = new Map<string, Promise<void>>();
  readonly #pending = new Set<Promise<void>>();

  constructor(opts: EventRecorderOptions) {
    this.#opts = opts;
    this.#api = opts.kc.makeApiClient(CoreV1Api);
  }

  /** Records an event about `target`. Returns at once and never throws. */
  event(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    try {
      const at = Date.now();
      // Inert on a terminal (`kubectl describe`), and bounded: a message may quote a helper's output.
      const msg = boundText(stripControl(message), MAX_MESSAGE);
      const m = target.metadata;
      if (!m?.name) throw new Error('target has no metadata.name');
      const key = JSON.stringify([
        m.uid ?? `${target.kind}/${m.namespace ?? ''}/${m.name}`,
        type,
        reason,
        msg,
      ]);
      const write = (this.#chains.get(key) ?? Promise.resolve())
        .then(() => this.#write(key, target, type, reason, msg, at))
        .catch((err: unknown) => {
          this.#opts.logger.warn('could not record event', {
            kind: target.kind,
            name: m.name,
            namespace: m.namespace,
            reason,
            error: errorMessage(err),
          });
        });
      this.#chains.set(key, write);
      this.#pending.add(write);
      void write.finally(() => {
        this.#pending.delete(write);
        if (this.#chains.get(key) === write) this.#chains.delete(key);
      });
    } catch (err) {
      this.#opts.logger.warn('could not record event', {
        kind: target?.kind,
        reason,
        error: errorMessage(err),
      });
    }
  }

  /** Resolves once every event recorded so far has been written (or has failed). For tests and shutdown. */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  async #write(key: string, target: EventTarget, type: string, reason: string, message: string, at: number) {
    const prev = this.#recorded.get(key);
    if (prev && at - prev.last < (this.#opts.aggregationWindowMs ?? AGGREGATION_WINDOW_MS)) {
      const count = prev.count + 1;
      try {
        await this.#api.patchNamespacedEvent(
          {
            name: prev.name,
            namespace: prev.namespace,
            body: { count, lastTimestamp: new Date(at).toISOString() },
          },
          withTimeout(WRITE_TIMEOUT_MS, mergePatch()),
        );
        this.#remember(key, { ...prev, count, last: at });
        return;
      } catch (err) {
        // Expired (events have a TTL) or deleted: start a new one.
        if (!isNotFound(err)) throw err;
      }
    }
    const created = await this.#api.createNamespacedEvent(
      { namespace: this.#namespaceOf(target), body: this.#build(target, type, reason, message, at) },
      withTimeout(WRITE_TIMEOUT_MS),
    );
    this.#remember(key, {
      name: created.metadata.name ?? '',
      namespace: created.metadata.namespace ?? this.#namespaceOf(target),
      count: 1,
      last: at,
    });
  }

  #namespaceOf(target: EventTarget): string {
    return target.metadata.namespace || 'default';
  }

  #build(target: EventTarget, type: string, reason: string, message: string, at: number): CoreV1Event {
    const m = target.metadata;
    const when = new Date(at);
    // client-go names events <object>.<unique hex>; the object part is cut so the name stays within 253,
    // and random bits keep two replicas from colliding in the same millisecond.
    const name = `${(m.name ?? '').slice(0, 200)}.${at.toString(16)}${randomBytes(4).toString('hex')}`;
    const { component, host } = this.#opts;
    return {
      metadata: { name, namespace: this.#namespaceOf(target) },
      involvedObject: {
        apiVersion: target.apiVersion,
        kind: target.kind,
        name: m.name,
        namespace: m.namespace || undefined,
        uid: m.uid,
        resourceVersion: m.resourceVersion,
        fieldPath: target.fieldPath,
      },
      type,
      reason,
      message,
      count: 1,
      firstTimestamp: when,
      lastTimestamp: when,
      source: { component, host },
      reportingComponent: component,
      reportingInstance: host ?? '',
    };
  }

  #remember(key: string, rec: Recorded): void {
    this.#recorded.delete(key); // re-insert: most recently used last
    this.#recorded.set(key, rec);
    if (this.#recorded.size > CACHE_ENTRIES) {
      const oldest = this.#recorded.keys().next().value;
      if (oldest !== undefined) this.#recorded.delete(oldest);
    }
  }
}
