/**
 * Lease-based leader election (coordination.k8s.io/v1), after client-go's
 * tools/leaderelection, so that only one controller replica reconciles.
 *
 * - Every write is a PUT carrying the resourceVersion that was read: of two
 *   candidates racing for a free lease, the apiserver lets exactly one win
 *   (the other gets 409 Conflict and stays a candidate).
 * - Expiry is judged on the local clock, from when this process last saw the
 *   lease record change, never from the timestamps inside it: clocks of
 *   different machines disagree, and a stale holder's renewTime is not to be
 *   trusted.
 * - A leader steps down when it has not renewed for renewDeadline (shorter
 *   than leaseDuration, so it stops before anyone else may start), and at
 *   once when it sees another holder in a valid lease (client-go waits out
 *   the renew deadline there; stepping down at once shortens the overlap).
 * - stop() releases a held lease (holder cleared), so a successor takes over
 *   within one retry period instead of waiting out the lease.
 *
 * Leadership is a best-effort guarantee, as in client-go: a paused process
 * can still act after its lease ran out. Writes that must not race are
 * protected by resourceVersion checks, not by the lease alone.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import type winston from 'winston';
import { errorMessage } from '../observability/logger.ts';
import { withTimeout } from './callopts.ts';
import { isAlreadyExists, isConflict, isNotFound } from './errors.ts';

/** How a LeaderElector is set up. Durations as in client-go (15 s / 10 s / 2 s). */
export interface LeaderElectionOptions {
  kc: KubeConfig;
  /** Namespace of the Lease. */
  namespace: string;
  /** Name of the Lease. */
  name: string;
  /** This candidate's unique identity (e.g. pod name + random suffix). */
  identity: string;
  /** How long others wait, after the last renewal they saw, before taking over. Default 15 000; rounded up to whole seconds. */
  leaseDurationMs?: number;
  /** A leader that could not renew for this long steps down. Default 10 000; must be < leaseDurationMs. */
  renewDeadlineMs?: number;
  /** Pause between attempts to acquire or renew. Default 2000; must be < renewDeadlineMs. */
  retryPeriodMs?: number;
  logger: winston.Logger;
}

/** What the elector tells its owner. Called synchronously; they must not throw (throws are logged). */
export interface LeaderCallbacks {
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

/** Candidates retry with up to this much extra delay, so they do not hit the apiserver in lockstep. */
const JITTER = 0.2;

/** See the module comment. One elector per process and lease; run() once. */
export class LeaderElector {
  readonly #api: CoordinationV1Api;
  readonly #o: Required<Omit<LeaderElectionOptions, 'kc' | 'logger'>>;
  readonly #leaseSeconds: number;
  readonly #log: winston.Logger;
  #callbacks: LeaderCallbacks | undefined;
  #running = false;
  #leader = false;
  #lease: V1Lease | undefined;
  /** resourceVersion of the record last seen, and the local time it was first seen. */
  #observed: { rv: string | undefined; at: number } = { rv: undefined, at: 0 };
  /** Another holder of a lease that is still valid, as found by the last attempt. */
  #otherHolder: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #deadline: NodeJS.Timeout | undefined;
  #attempt: Promise<void> | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.#o = {
      namespace: opts.namespace,
      name: opts.name,
      identity: opts.identity,
      leaseDurationMs: opts.leaseDurationMs ?? 15_000,
      renewDeadlineMs: opts.renewDeadlineMs ?? 10_000,
      retryPeriodMs: opts.retryPeriodMs ?? 2000,
    };
    const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = this.#o;
    if (!opts.identity) throw new Error('leader election: identity must not be empty');
    if (!(leaseDurationMs > renewDeadlineMs))
      throw new Error('leader election: leaseDurationMs must exceed renewDeadlineMs');
    if (!(renewDeadlineMs > retryPeriodMs * (1 + JITTER))) {
      throw new Error('leader election: renewDeadlineMs must exceed retryPeriodMs (with jitter)');
    }
    this.#leaseSeconds = Math.ceil(leaseDurationMs / 1000);
    this.#api = opts.kc.makeApiClient(CoordinationV1Api);
    this.#log = opts.logger.child({ lease: `${opts.namespace}/${opts.name}`, identity: opts.identity });
  }

  /** True while this process holds the lease. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /**
   * Campaigns for the lease in the background. onStartedLeading is called on
   * acquiring it, onStoppedLeading on losing it (then it campaigns again, so
   * the two may alternate) and on stop() while leading.
   */
  run(callbacks: LeaderCallbacks): void {
    if (this.#callbacks) throw new Error('leader election: run() may be called once');
    this.#callbacks = callbacks;
    this.#running = true;
    this.#schedule(0);
  }

  /**
   * Stops campaigning; if leading, calls onStoppedLeading and then releases
   * the lease so that a successor takes over at once. Stop the work the lease
   * guards before calling this.
   */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    clearTimeout(this.#timer);
    await this.#attempt;
    if (!this.#leader) return;
    this.#stepDown('stopping');
    await this.#release();
  }

  #schedule(ms: number): void {
    if (!this.#running) return;
    this.#timer = setTimeout(() => {
      this.#attempt = this.#tick().finally(() => (this.#attempt = undefined));
    }, ms);
  }

  async #tick(): Promise<void> {
    let ok = false;
    try {
      ok = await this.#tryAcquireOrRenew();
    } catch (err) {
      // A leader failing to renew matters; a candidate failing to acquire is routine.
      this.#log.log(this.#leader ? 'warn' : 'debug', 'lease acquire/renew failed', {
        error: errorMessage(err),
      });
    }
    if (!this.#running) return;
    if (ok) {
      this.#renewed();
    } else if (this.#leader && this.#otherHolder !== undefined) {
      this.#stepDown(`lease is now held by ${this.#otherHolder}`);
    }
    const period = this.#o.retryPeriodMs;
    this.#schedule(this.#leader ? period : period * (1 + Math.random() * JITTER));
  }

  /** Returns true when this process holds the lease after the attempt. */
  async #tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.#o;
    const opts = withTimeout(this.#o.renewDeadlineMs / 2);
    const now = Date.now();
    this.#otherHolder = undefined;

    let lease: V1Lease;
    try {
      lease = await this.#api.readNamespacedLease({ name, namespace }, opts);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      try {
        this.#lease = await this.#api.createNamespacedLease(
          { namespace, body: { metadata: { name, namespace }, spec: this.#spec(now, undefined) } },
          opts,
        );
      } catch (createErr) {
        if (isAlreadyExists(createErr)) return false; // another candidate created it first
        throw createErr;
      }
      this.#observe(this.#lease, now);
      return true;
    }

    this.#observe(lease, now);
    const holder = lease.spec?.holderIdentity ?? '';
    const durationMs = (lease.spec?.leaseDurationSeconds ?? this.#leaseSeconds) * 1000;
    if (holder !== '' && holder !== identity && this.#observed.at + durationMs > now) {
      this.#otherHolder = holder;
      return false;
    }
    try {
      this.#lease = await this.#api.replaceNamespacedLease(
        { name, namespace, body: { ...lease, spec: this.#spec(now, lease) } },
        opts,
      );
    } catch (err) {
      if (isConflict(err)) return false; // someone else wrote first: they won this round
      throw err;
    }
    this.#observe(this.#lease, now);
    return true;
  }

  /** The spec this candidate writes when acquiring (previous holder differs) or renewing. */
  #spec(now: number, current: V1Lease | undefined): V1Lease['spec'] {
    const prev = current?.spec;
    const renewing = prev?.holderIdentity === this.#o.identity;
    return {
      holderIdentity: this.#o.identity,
      leaseDurationSeconds: this.#leaseSeconds,
      acquireTime: renewing && prev?.acquireTime ? prev.acquireTime : new V1MicroTime(now),
      renewTime: new V1MicroTime(now),
      leaseTransitions: current ? (prev?.leaseTransitions ?? 0) + (renewing ? 0 : 1) : 0,
    };
  }

  #observe(lease: V1Lease, now: number): void {
    const rv = lease.metadata?.resourceVersion;
    if (rv !== this.#observed.rv) this.#observed = { rv, at: now };
  }

  #renewed(): void {
    clearTimeout(this.#deadline);
    this.#deadline = setTimeout(
      () => this.#stepDown(`could not renew for ${this.#o.renewDeadlineMs} ms`),
      this.#o.renewDeadlineMs,
    );
    if (this.#leader) return;
    this.#leader = true;
    this.#log.info('became leader');
    this.#call('onStartedLeading');
  }

  #stepDown(reason: string): void {
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    if (!this.#leader) return;
    this.#leader = false;
    this.#log.warn('stopped leading', { reason });
    this.#call('onStoppedLeading');
  }

  /** Clears the holder, if the lease is still as we last wrote it (409 means it is not ours any more). */
  async #release(): Promise<void> {
    const lease = this.#lease;
    if (!lease?.spec || lease.spec.holderIdentity !== this.#o.identity) return;
    const now = new V1MicroTime();
    try {
      await this.#api.replaceNamespacedLease(
        {
          name: this.#o.name,
          namespace: this.#o.namespace,
          body: {
            ...lease,
            spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: now },
          },
        },
        withTimeout(this.#o.renewDeadlineMs / 2),
      );
      this.#log.info('released lease');
    } catch (err) {
      this.#log.warn('could not release lease', { error: errorMessage(err) });
    }
  }

  #call(which: keyof LeaderCallbacks): void {
    try {
      this.#callbacks?.[which]();
    } catch (err) {
      this.#log.error(`${which} threw`, { error: errorMessage(err) });
    }
  }
}
