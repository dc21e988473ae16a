/**
 * The agent's defaults, defined once: the CLI's flags and usage text, the
 * Agent's options and the Helm chart's documented values
 * (charts/kmod-operator/values.yaml, checked by defaults.test.ts) all come
 * from here. Each number is the kernel's where the kernel has one.
 */
import { DEFAULT_BOUNDING_CAPS, DEFAULT_INHERITABLE_CAPS } from '../helper/capabilities.ts';

/** Helpers alive at once on a node: the kernel's MAX_KMOD_CONCURRENT. */
export const DEFAULT_MAX_CONCURRENT = 50;
/** How long a run waits for a free helper slot before Throttled: MAX_KMOD_ALL_BUSY_TIMEOUT (5 s). */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;
/** How long disabling waits for running helpers: __usermodehelper_disable()'s 5 s, then -EAGAIN. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 5000;
/** How long a run waits while helpers are Freezing/Disabled before it is parked (stays pending). */
export const DEFAULT_FREEZE_WAIT_MS = 30_000;
/** SIGTERM's drain: below deploy/'s terminationGracePeriodSeconds (30), so it ends before SIGKILL. */
export const DEFAULT_SHUTDOWN_GRACE_MS = 25_000;
/** The helper's capability masks: bounding CAP_SYS_MODULE only, inheritable empty. */
export const DEFAULT_CAPABILITIES: {
  readonly bounding: readonly string[];
  readonly inheritable: readonly string[];
} = Object.freeze({ bounding: DEFAULT_BOUNDING_CAPS, inheritable: DEFAULT_INHERITABLE_CAPS });
/** Resolutions at once on a node (policy/noderesolver.ts owns it: policy/ imports nothing from agent/). */
export { DEFAULT_RESOLVE_CONCURRENCY } from '../policy/noderesolver.ts';
/** The tracer (strace) and the kernel log reader the agent runs by default; '' turns either off. */
export const DEFAULT_TRACER = '/usr/bin/strace';
export const DEFAULT_DMESG = '/usr/bin/dmesg';
/** Retries of a run (an unexpected error, a result not yet written, a throttled try) back off from here... */
export const RETRY_BASE_DELAY_MS = 1000;
/** ...doubling up to this. */
export const RETRY_MAX_DELAY_MS = 60_000;
