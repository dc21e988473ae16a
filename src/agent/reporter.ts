/**
 * Writes this node's NodeModules status: the one place the agent writes to
 * the API server about runs. What it writes is composed from the runs
 * (runs.ts) in the order of the node's spec: a result for every request of
 * the spec the agent has one for (a request that left the spec leaves the
 * status at the next write), the counts `kubectl get nodemodules` shows, and
 * the last failure; kept within the node's budget (budget.ts).
 *
 * Writes coalesce: one is in flight at a time, and everything that changed
 * meanwhile goes in the next, so the claims of a burst ride a few writes, not
 * one each. `flush()` resolves once a write holding every change made before
 * the call went through (a claim is durable before its helper starts).
 *
 * A write is a JSON patch whose `test` operations make it conditional on the
 * object (its UID) and on who wrote the status last (`status.agent`), not on
 * the resourceVersion: the controller's spec writes never make it fail, and a
 * status written by another agent process for this node (a rolling update
 * with surge) does, once. The reporter then reads the object and keeps, per
 * request, the newer claim (result.ts `supersedes`), and writes again.
 *
 * A write the API server refuses as invalid (422, not a failed `test`) is final
 * for that body (reporttext.ts): the next goes with every result shortened,
 * then minimal. A write that fails otherwise is retried with backoff
 * (Retry-After honoured) while anything is left unwritten: a result is never
 * lost to an API error.
 */
import {
  RESULT_LIMITS,
  isTerminal,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesResult,
  type NodeModulesStatus,
  type NodeModulesSummary,
} from '../api/types.ts';
import { retryAfterMs, statusCode } from '../kube/errors.ts';
import type { JsonPatchOp, Resources } from '../kube/resources.ts';
import { equalJitter } from '../kube/workqueue.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { cut, fitResults } from './budget.ts';
import { afterInvalid } from './reporttext.ts';
import type { AgentRuns } from './runs.ts';
import { supersedes } from './result.ts';

/** How long after a request left the spec its result is taken out of the status, if nothing else writes first. */
export const PRUNE_DELAY_MS = 2000;
/** Writes tried again at once after a failed `test` (another writer), before backing off. */
const TAKEOVER_RETRIES = 3;

/**
 * The wait before retry `failures` (1 for the first): exponential from `baseMs` up to `maxMs`, of
 * which a random half (equal jitter), and never less than the server's Retry-After. Why jitter:
 * the agents of a fan-out fail together when the API server falls behind, and agents retrying
 * in step would hit it together again, every time.
 */
export function retryDelay(
  baseMs: number,
  maxMs: number,
  failures: number,
  retryAfter: number | undefined,
  random: () => number,
): number {
  const backoff = Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
  return Math.min(maxMs, Math.max(equalJitter(backoff, random), retryAfter ?? 0));
}

/** What the reporter works with. */
export interface ReporterOptions {
  resources: Pick<Resources, 'patchNodeModulesStatus' | 'getNodeModules'>;
  nodeName: string;
  instanceId: string;
  runs: AgentRuns;
  logger: Logger;
  /** Byte budget of status.results (default NODE_STATUS_BUDGET_BYTES). */
  budgetBytes?: number;
  /** Backoff of a failed write (default 500 ms doubling to 30 s). */
  backoff?: { baseMs: number; maxMs: number };
  /** Source of the retries' jitter (tests pin it). */
  random?: () => number;
  /** Results another agent process wrote won over this one's (their runs must be decided again). */
  onTakenOver?: (uids: string[]) => void;
}

/** What the reporter believes the server's status is, for the `test` of the next write. */
type ServerStatus = { exists: false } | { exists: true; agent: string | undefined };

/** See the module comment. */
export class StatusReporter {
  readonly #o: ReporterOptions;
  /** The node's object as last seen: its spec orders and bounds what is written. */
  #object: NodeModules | undefined;
  #server: ServerStatus = { exists: false };
  /** Flush requests: each waits for a write started after it. */
  #requested = 0;
  #written = 0;
  #waiters: Array<{ id: number; resolve: () => void; reject: (err: unknown) => void }> = [];
  #pumping = false;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  /** Consecutive 422s on the content (0: write as is; 1: shortened; 2: minimal). */
  #invalid = 0;
  #stopped = false;

  constructor(opts: ReporterOptions) {
    this.#o = opts;
  }

  /** The node's object as the agent's cache has it now (undefined once deleted). */
  observe(nm: NodeModules | undefined): void {
    const before = this.#object;
    if (nm && before && nm.metadata.uid === before.metadata.uid && isOlder(nm, before)) return;
    this.#object = nm;
    if (!nm || nm.metadata.uid !== before?.metadata.uid) this.#server = serverStatusOf(nm);
    // A request left the spec: its result leaves the status soon, if nothing else writes first.
    const inSpec = new Set((nm?.spec.requests ?? []).map((e) => e.uid));
    const stale = (before?.status?.results ?? []).some((r) => !inSpec.has(r.uid));
    if (nm && stale) this.#schedule(PRUNE_DELAY_MS);
  }

  /**
   * Takes over the status a previous agent process of this node wrote (at start, from a synced
   * cache): its results become the runs' results, as written.
   */
  adopt(nm: NodeModules | undefined): void {
    this.#object = nm;
    this.#server = serverStatusOf(nm);
    const inSpec = new Set((nm?.spec.requests ?? []).map((e) => e.uid));
    for (const r of nm?.status?.results ?? []) {
      if (!inSpec.has(r.uid)) continue;
      const run = this.#o.runs.run(r.uid);
      run.result = r;
      run.dirty = false;
    }
  }

  /** Resolves once a write holding every change made so far went through; rejects with that write's error. */
  flush(): Promise<void> {
    const id = ++this.#requested;
    const p = new Promise<void>((resolve, reject) => this.#waiters.push({ id, resolve, reject }));
    void this.#pump();
    return p;
  }

  /** Stops retrying; pending flushes reject. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const w of this.#waiters.splice(0)) w.reject(new Error('agent stopping'));
  }

  #schedule(ms: number): void {
    if (this.#stopped || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      ++this.#requested;
      void this.#pump();
    }, ms);
    this.#timer.unref();
  }

  async #pump(): Promise<void> {
    if (this.#pumping || this.#stopped) return;
    this.#pumping = true;
    try {
      while (this.#requested > this.#written && !this.#stopped) {
        const target = this.#requested;
        try {
          await this.#write();
          this.#failures = 0;
          this.#written = target;
          this.#settle(target);
        } catch (err) {
          this.#failures++;
          this.#settle(target, err);
          const delay = this.#delay(err);
          this.#o.logger.warn('writing the node status failed; retrying', {
            error: errorMessage(err),
            retryInMs: delay,
          });
          // Whatever is still unwritten is written later, whoever asked.
          if ([...this.#o.runs.all()].some((r) => r.dirty)) this.#schedule(delay);
          return;
        }
      }
    } finally {
      this.#pumping = false;
    }
  }

  #settle(upTo: number, err?: unknown): void {
    const done = this.#waiters.filter((w) => w.id <= upTo);
    this.#waiters = this.#waiters.filter((w) => w.id > upTo);
    for (const w of done) {
      if (err === undefined) w.resolve();
      else w.reject(err);
    }
  }

  #delay(err: unknown): number {
    const { baseMs, maxMs } = this.#o.backoff ?? { baseMs: 500, maxMs: 30_000 };
    return retryDelay(baseMs, maxMs, this.#failures, retryAfterMs(err), this.#o.random ?? Math.random);
  }

  /** One write of the whole status; on a failed `test`, reads the object, merges, and writes again. */
  async #write(): Promise<void> {
    for (let i = 0; ; i++) {
      const nm = this.#object;
      if (!nm)
        throw new Error(`node ${this.#o.nodeName} has no NodeModules (not dispatched to yet, or deleted)`);
      const written = [...this.#o.runs.all()].filter((r) => r.dirty).map((r) => [r, r.result] as const);
      const level = this.#invalid;
      const resultOf = (uid: string) => {
        const r = this.#o.runs.get(uid)?.result;
        if (!r || level === 0) return r;
        const form = afterInvalid(r, level, identityOf, '');
        return 'write' in form ? form.write : r;
      };
      const status = composeStatus(nm, resultOf, this.#o.instanceId, this.#o.budgetBytes);
      try {
        const updated = await this.#o.resources.patchNodeModulesStatus(
          this.#o.nodeName,
          ops(nm, this.#server, status),
        );
        this.#object = keepNewer(this.#object, updated);
        this.#server = { exists: true, agent: this.#o.instanceId };
        this.#invalid = 0;
        // A result changed while the write was in flight stays dirty for the next one.
        for (const [run, result] of written) if (run.result === result) run.dirty = false;
        return;
      } catch (err) {
        if (statusCode(err) !== 422 || i >= TAKEOVER_RETRIES + 2) throw err;
        if (await this.#takeOver()) continue;
        // The content itself: shortened, then minimal; then the error stands (retried with backoff).
        if (this.#invalid >= 2) {
          this.#invalid = 0;
          this.#o.logger.error('the API server refuses this node’s status even minimal', {
            error: errorMessage(err),
          });
          throw err;
        }
        this.#invalid++;
        this.#o.logger.warn('the API server refused the node status as invalid; writing it shortened', {
          form: this.#invalid === 1 ? 'shortened' : 'minimal',
          error: errorMessage(err),
        });
      }
    }
  }

  /**
   * After a failed write: reads the object; if another writer (or another object) is the reason,
   * merges and returns true; false when the 422 was about the content itself.
   */
  async #takeOver(): Promise<boolean> {
    const latest = await this.#o.resources.getNodeModules(this.#o.nodeName);
    const before = this.#object;
    if (!latest) {
      this.#object = undefined;
      return false;
    }
    const server = serverStatusOf(latest);
    const sameObject = latest.metadata.uid === before?.metadata.uid;
    const sameWriter =
      server.exists === this.#server.exists &&
      (!server.exists || !this.#server.exists || server.agent === this.#server.agent);
    this.#object = latest;
    this.#server = server;
    if (sameObject && sameWriter) return false;
    const lost: string[] = [];
    const inSpec = new Set((latest.spec.requests ?? []).map((e) => e.uid));
    for (const theirs of latest.status?.results ?? []) {
      if (!inSpec.has(theirs.uid)) continue;
      const run = this.#o.runs.run(theirs.uid);
      if (!run.result || supersedes(theirs, run, this.#o.instanceId)) {
        if (run.result) lost.push(theirs.uid);
        run.result = theirs;
        run.dirty = false;
      }
    }
    this.#o.logger.warn('another writer wrote this node’s status; merged and writing again', {
      writer: server.exists ? server.agent : undefined,
      object: sameObject ? 'same' : 'replaced',
      lost: lost.length,
    });
    if (lost.length) this.#o.onTakenOver?.(lost);
    return true;
  }
}

/** What identifies a result when it must be written minimal: everything but its texts and lists. */
function identityOf(r: NodeModulesResult): NodeModulesResult {
  const { message: _m, stderrTail: _t, resolved: _r, verified: _v, kernelLog: _k, ...rest } = r;
  return rest;
}

/** The test operations a write starts with, then the status itself. */
function ops(nm: NodeModules, server: ServerStatus, status: NodeModulesStatus): JsonPatchOp[] {
  return [
    { op: 'test', path: '/metadata/uid', value: nm.metadata.uid },
    server.exists
      ? { op: 'test', path: '/status/agent', value: server.agent ?? null }
      : { op: 'test', path: '/status', value: null },
    { op: 'add', path: '/status', value: status },
  ];
}

function serverStatusOf(nm: NodeModules | undefined): ServerStatus {
  return nm?.status ? { exists: true, agent: nm.status.agent } : { exists: false };
}

/** resourceVersions are etcd revisions: numbers in practice; an object older than the one held is ignored. */
function isOlder(a: NodeModules, b: NodeModules): boolean {
  const x = Number(a.metadata.resourceVersion);
  const y = Number(b.metadata.resourceVersion);
  return Number.isFinite(x) && Number.isFinite(y) && x < y;
}

function keepNewer(held: NodeModules | undefined, written: NodeModules): NodeModules {
  return held && held.metadata.uid === written.metadata.uid && isOlder(written, held) ? held : written;
}

/**
 * The status to write: the results of the spec's requests (in spec order, within the budget),
 * their counts, and the most recent failure. Pure.
 */
export function composeStatus(
  nm: NodeModules,
  resultOf: (uid: string) => NodeModulesResult | undefined,
  agent: string,
  budgetBytes?: number,
): NodeModulesStatus {
  const spec = nm.spec.requests ?? [];
  const results: NodeModulesResult[] = [];
  for (const e of spec) {
    const r = resultOf(e.uid);
    if (r) results.push(r);
  }
  const { summary, lastFailure } = summarizeNode(spec, resultOf, nm.spec.bootID);
  return {
    observedGeneration: nm.metadata.generation ?? 1,
    agent,
    summary,
    ...(lastFailure ? { lastFailure } : {}),
    results: fitResults(results, budgetBytes),
  };
}

/** Counts over the spec's requests, and the most recent failure in one line. Pure. */
export function summarizeNode(
  spec: readonly NodeModulesRequest[],
  resultOf: (uid: string) => NodeModulesResult | undefined,
  bootID: string | undefined,
): { summary: NodeModulesSummary; lastFailure?: string } {
  const summary: NodeModulesSummary = {
    requests: spec.length,
    succeeded: 0,
    failed: 0,
    pending: 0,
    running: 0,
  };
  let last: NodeModulesResult | undefined;
  for (const e of spec) {
    const r = resultOf(e.uid);
    const current = r && r.observedGeneration === e.generation ? r : undefined;
    const rebooted = !!bootID && !!current?.bootID && current.bootID !== bootID;
    if (current && isTerminal(current.phase) && !rebooted) {
      if (current.phase === 'Succeeded') summary.succeeded++;
      else {
        summary.failed++;
        if (!last || (current.finishTime ?? '') >= (last.finishTime ?? '')) last = current;
      }
      continue;
    }
    summary.pending++;
    if (current?.phase === 'Running' && !rebooted) summary.running++;
  }
  if (!last) return { summary };
  const text = `${last.name}: ${last.reason ?? 'Failed'}: ${(last.message ?? '').split('\n')[0]}`;
  return { summary, lastFailure: cut(text, RESULT_LIMITS.lastFailure) };
}
