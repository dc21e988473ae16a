/**
 * The node's helper state as the agent lives it: follows the node's
 * `kmod.dev/helpers` annotation (only when that annotation changed: the
 * informer hands over the old Node), moves the NodeHelperState machine one
 * transition at a time, reports each outcome on the Node (annotations, an
 * Event, a metric), and hands the runs parked while helpers were not
 * enabled (runs.ts keeps which) back when they are.
 */
import { CoreV1Api, type KubeConfig, type V1Node } from '@kubernetes/client-node';
import { mergePatch } from '../kube/callopts.ts';
import type { EventRecorder, EventTarget } from '../kube/events.ts';
import { annotationChanged } from '../kube/predicates.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import type { AgentMetrics } from './metrics.ts';
import {
  HELPERS_ANNOTATION,
  HELPERS_MESSAGE_ANNOTATION,
  HELPERS_STATE_ANNOTATION,
  NodeHelperState,
  parseHelperState,
  type HelperState,
  type TransitionResult,
} from './nodestate.ts';
import type { HelperSlots } from './slots.ts';

/** What NodeHelpers works with. */
export interface NodeHelpersOptions {
  kc: KubeConfig;
  nodeName: string;
  /** The Node as an Event target: node Events go on the Node, as the kubelet's do. */
  nodeTarget: EventTarget;
  slots: HelperSlots;
  events: EventRecorder;
  metrics: AgentMetrics;
  logger: Logger;
  drainTimeoutMs: number;
  /** Marks a run parked (true) or takes it out of the parked set (false: it was). */
  parked: (uid: string, parked: boolean) => boolean;
  /** Called once helpers are Enabled again: the parked runs are taken up again. */
  resumeParked: () => void;
  /** Called with one run to take up again at once. */
  resume: (uid: string) => void;
}

/** See the module comment. */
export class NodeHelpers {
  readonly #opts: NodeHelpersOptions;
  readonly #core: CoreV1Api;
  readonly #state: NodeHelperState;
  /** Transitions run one at a time, in annotation order. */
  #transitions: Promise<void> = Promise.resolve();

  constructor(opts: NodeHelpersOptions) {
    this.#opts = opts;
    this.#core = opts.kc.makeApiClient(CoreV1Api);
    // Draining waits on the slot pool's own idle signal.
    this.#state = new NodeHelperState(
      () => opts.slots.running,
      () => opts.slots.drained(),
    );
  }

  get state(): HelperState {
    return this.#state.state;
  }

  /** Runs waiting for helpers to be enabled right now (see NodeHelperState.waiting). */
  get waiting(): number {
    return this.#state.waiting;
  }

  /** See NodeHelperState.whenEnabled. */
  whenEnabled(maxWaitMs: number, signal?: AbortSignal): Promise<boolean> {
    return this.#state.whenEnabled(maxWaitMs, signal);
  }

  /**
   * Follows the node's annotation. `old` is the Node as last seen (undefined
   * for the first look): a Node update that did not touch the annotation
   * (heartbeats, our own state report) changes nothing.
   */
  onNode(node: V1Node, old?: V1Node): void {
    if (old && !annotationChanged(HELPERS_ANNOTATION, node, old)) return;
    const raw = node.metadata?.annotations?.[HELPERS_ANNOTATION];
    let desired: HelperState;
    try {
      desired = parseHelperState(raw);
    } catch (err) {
      // Fail safe: a value nobody meant (a typo of "Disabled"?) must not enable helpers. Keep the
      // current state (Disabled at start-up) and say why on the node.
      const message = `${(err as Error).message}; helpers stay ${this.state}`;
      this.#opts.logger.error('invalid helper state annotation', { detail: message });
      this.#opts.events.event(this.#opts.nodeTarget, 'Warning', 'InvalidHelperState', message);
      void this.#report(this.state, message);
      return;
    }
    void this.set(desired);
  }

  /** Queues a transition to `target` after those already asked for; resolves once it is done and reported. */
  set(target: HelperState): Promise<void> {
    this.#transitions = this.#transitions.then(async () => {
      const result = await this.#state.set(target, this.#opts.drainTimeoutMs);
      await this.#reportTransition(target, result);
      if (result.state === 'Enabled') this.#opts.resumeParked();
    });
    return this.#transitions;
  }

  /** Resolves once every transition asked for so far is done and reported. */
  settled(): Promise<void> {
    return this.#transitions;
  }

  /**
   * Disables helpers and drains for up to `graceMs` (SIGTERM), without
   * reporting on the Node or reverting: the process is going away.
   */
  async shutdown(graceMs: number): Promise<TransitionResult> {
    await this.#transitions;
    return this.#state.set('Disabled', graceMs);
  }

  /** Parks a run that found helpers not enabled; it stays pending and is resumed on Enabled. */
  park(uid: string, log: Logger): void {
    log.info('helpers are not enabled on this node; run stays pending', { state: this.state });
    this.#opts.parked(uid, true);
    // The state may have flipped back to Enabled while the run decided: then take it up again now.
    if (this.state === 'Enabled' && this.#opts.parked(uid, false)) this.#opts.resume(uid);
  }

  async #reportTransition(requested: HelperState, result: TransitionResult): Promise<void> {
    this.#opts.metrics.helperState(result.state);
    this.#opts.logger.log(result.ok ? 'info' : 'warn', 'helper state changed', {
      requested,
      state: result.state,
      detail: result.message,
    });
    this.#opts.events.event(
      this.#opts.nodeTarget,
      result.ok ? 'Normal' : 'Warning',
      result.ok ? `Helpers${result.state}` : 'HelpersDisableFailed',
      result.message,
    );
    await this.#report(result.state, result.message);
  }

  /** Writes the helper state and what the last transition did into the node's annotations. */
  async #report(state: HelperState, message: string): Promise<void> {
    try {
      await this.#core.patchNode(
        {
          name: this.#opts.nodeName,
          body: {
            metadata: {
              annotations: { [HELPERS_STATE_ANNOTATION]: state, [HELPERS_MESSAGE_ANNOTATION]: message },
            },
          },
        },
        mergePatch(),
      );
    } catch (err) {
      // Best effort: the Event and the metric carry the same news; the next transition reports again.
      this.#opts.logger.warn('could not report the helper state on the node', { error: errorMessage(err) });
    }
  }
}
