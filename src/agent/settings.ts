/**
 * What admins may change while the agent runs, read from two ConfigMaps in
 * the operator's namespace (writable by admins only, through RBAC):
 *
 * - the module policy (deploy/40-module-policy.yaml), the same data the
 *   admission policy carries, checked again before every exec;
 * - the agent config, whose capability masks for the helper may be
 *   NARROWED at runtime but never widened, like the kernel's
 *   usermodehelper/bset and inheritable sysctls: proc_cap_handler() stores
 *   cap_intersect(old, new), so the narrowing part of any write applies and
 *   bits that would widen are ignored, loudly (log, Event, metric); the
 *   narrower mask stays in force until the agent restarts with new flags.
 *
 * The helper path is deliberately not here: it is a flag, fixed for the
 * agent's life (CONFIG_STATIC_USERMODEHELPER).
 */
import type { KubeConfig, V1ConfigMap } from '@kubernetes/client-node';
import { capMaskFromNames, capNamesFromMask, capsAdded, parseCapList } from '../helper/capabilities.ts';
import { Informer } from '../kube/informer.ts';
import type { Logger } from '../observability/logger.ts';
import { compilePolicy, type PolicyState } from '../policy/modulepolicy.ts';

export type { PolicyState } from '../policy/modulepolicy.ts';

/** namespace/name of a ConfigMap. */
export interface ConfigMapRef {
  namespace: string;
  name: string;
}

export interface CapabilityMasks {
  bounding: string[];
  inheritable: string[];
}

/** ConfigMap keys of the agent config. */
export const BOUNDING_KEY = 'capabilityBounding';
export const INHERITABLE_KEY = 'capabilityInheritable';

export interface AgentSettingsOptions {
  kc: KubeConfig;
  logger: Logger;
  /** The module policy ConfigMap; unset = no agent-side policy. */
  policy?: ConfigMapRef;
  /** The agent config ConfigMap; unset = masks fixed at their flag values. */
  config?: ConfigMapRef;
  /** The masks from the flags: the widest the helper can ever get until restart. */
  initialCaps: CapabilityMasks;
  /** Called when a change would widen a mask (for the Event and metric). */
  onWidenRefused?: (message: string) => void;
  /** Called when a mask was narrowed. */
  onNarrowed?: (message: string) => void;
  /** The ConfigMap watches' watchdog (see AgentOptions.watchTimeoutMs). */
  watchTimeoutMs?: number;
}

/**
 * Applies a proposed mask as the kernel's proc_cap_handler() does: the mask
 * in force becomes current ∩ proposed. Returns it, and the capabilities the
 * proposal would have added (ignored). Pure.
 */
export function intersectMask(current: bigint, proposed: bigint): { mask: bigint; ignored: string[] } {
  return { mask: current & proposed, ignored: capsAdded(current, proposed) };
}

function cmInformer(
  kc: KubeConfig,
  ref: ConfigMapRef,
  logger: Logger,
  watchTimeoutMs: number | undefined,
): Informer<V1ConfigMap> {
  return new Informer<V1ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${ref.namespace}/configmaps`,
    fieldSelector: `metadata.name=${ref.name}`,
    logger,
    watchTimeoutMs,
  });
}

export class AgentSettings {
  readonly #opts: AgentSettingsOptions;
  readonly #log: Logger;
  #bounding: bigint;
  #inheritable: bigint;
  #policy: PolicyState = { kind: 'none' };
  readonly #policyInformer: Informer<V1ConfigMap> | undefined;
  readonly #configInformer: Informer<V1ConfigMap> | undefined;

  constructor(opts: AgentSettingsOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#bounding = capMaskFromNames(opts.initialCaps.bounding);
    this.#inheritable = capMaskFromNames(opts.initialCaps.inheritable);
    if (opts.policy) {
      const ref = opts.policy;
      this.#policy = {
        kind: 'broken',
        reason: `module policy ConfigMap ${ref.namespace}/${ref.name} not read yet`,
      };
      this.#policyInformer = cmInformer(opts.kc, ref, opts.logger, opts.watchTimeoutMs);
      const onPolicy = () => this.#readPolicy(ref);
      for (const ev of ['add', 'update', 'delete'] as const) this.#policyInformer.on(ev, onPolicy);
    }
    if (opts.config) {
      this.#configInformer = cmInformer(opts.kc, opts.config, opts.logger, opts.watchTimeoutMs);
      const onConfig = (cm: V1ConfigMap) => this.#applyConfig(cm);
      this.#configInformer.on('add', onConfig);
      this.#configInformer.on('update', onConfig);
    }
  }

  async start(): Promise<void> {
    await Promise.all([this.#policyInformer?.start(), this.#configInformer?.start()]);
    if (this.#opts.policy) this.#readPolicy(this.#opts.policy);
  }

  async stop(): Promise<void> {
    await Promise.all([this.#policyInformer?.stop(), this.#configInformer?.stop()]);
  }

  /** The module policy in force. */
  get policy(): PolicyState {
    return this.#policy;
  }

  /** The capability masks in force for the next helper. */
  get capabilities(): CapabilityMasks {
    return { bounding: capNamesFromMask(this.#bounding), inheritable: capNamesFromMask(this.#inheritable) };
  }

  #readPolicy(ref: ConfigMapRef): void {
    const where = `${ref.namespace}/${ref.name}`;
    const cm = this.#policyInformer?.get(ref.name, ref.namespace);
    if (!cm) {
      // As the admission binding's parameterNotFoundAction: Deny: no policy, no loading.
      this.#policy = {
        kind: 'broken',
        reason: `module policy ConfigMap ${where} does not exist; failing closed`,
      };
      this.#log.warn('module policy missing; refusing every module', { configMap: where });
      return;
    }
    try {
      this.#policy = { kind: 'policy', policy: compilePolicy(cm.data, where) };
      this.#log.info('module policy loaded', {
        configMap: where,
        allow: cm.data?.allow,
        deny: cm.data?.deny,
      });
    } catch (err) {
      this.#policy = { kind: 'broken', reason: `${(err as Error).message}; failing closed` };
      this.#log.error('module policy invalid; refusing every module', {
        configMap: where,
        error: (err as Error).message,
      });
    }
  }

  #applyConfig(cm: V1ConfigMap): void {
    const where = `${cm.metadata?.namespace}/${cm.metadata?.name}`;
    for (const [key, get, set] of [
      [BOUNDING_KEY, () => this.#bounding, (m: bigint) => (this.#bounding = m)],
      [INHERITABLE_KEY, () => this.#inheritable, (m: bigint) => (this.#inheritable = m)],
    ] as const) {
      const value = cm.data?.[key];
      if (value === undefined) continue; // absent = unchanged: removing a key cannot widen anything
      let proposed: bigint;
      try {
        proposed = capMaskFromNames(parseCapList(key, value));
      } catch (err) {
        this.#log.error('agent config invalid; mask unchanged', {
          configMap: where,
          error: (err as Error).message,
        });
        this.#opts.onWidenRefused?.(`${where}: ${(err as Error).message}; ${key} unchanged`);
        continue;
      }
      const current = get();
      if (proposed === current) continue;
      const { mask, ignored } = intersectMask(current, proposed);
      if (mask !== current) {
        set(mask);
        const message = `${where}: ${key} narrowed to ${capNamesFromMask(mask).join(',') || '(empty)'}`;
        this.#log.info('helper capability mask narrowed', {
          configMap: where,
          key,
          mask: capNamesFromMask(mask),
        });
        this.#opts.onNarrowed?.(message);
      }
      if (ignored.length) {
        const message =
          `${where}: ${key} would add ${ignored.join(', ')}; helper capability masks can only be narrowed ` +
          `while the agent runs (restart it with new flags to widen). In force: ${capNamesFromMask(mask).join(',') || '(empty)'}`;
        this.#log.warn('refused to widen a helper capability mask', {
          configMap: where,
          key,
          added: ignored,
          mask: capNamesFromMask(mask),
        });
        this.#opts.onWidenRefused?.(message);
      }
    }
  }
}
