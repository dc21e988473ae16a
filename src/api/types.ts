/**
 * The kmod.dev/v1alpha1 API: ModuleRequest (what a person asks for) and
 * ModuleRun (one request on one node, the controller's dispatch unit).
 * The CRDs in crds/ are the schema the apiserver enforces; these types
 * describe the same objects for the TypeScript side.
 */
import type { V1ObjectMeta, V1OwnerReference } from '@kubernetes/client-node';

export const GROUP = 'kmod.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const REQUEST_PLURAL = 'modulerequests';
export const RUN_PLURAL = 'moduleruns';

/** Label on a ModuleRun naming its request's UID (names can exceed label-value length, UIDs cannot). */
export const LABEL_REQUEST_UID = 'kmod.dev/request-uid';
/** Label on a ModuleRun naming its request (set when the name fits in a label value). */
export const LABEL_REQUEST_NAME = 'kmod.dev/request';
/**
 * Annotation on a ModuleRun: its request's creationTimestamp. On a node, requests for the same
 * module run one at a time in the order their requests were created (src/agent/ordering.ts).
 */
export const ANNOTATION_REQUEST_CREATED = 'kmod.dev/request-created';

/** call_usermodehelper's wait modes (UMH_WAIT_PROC, UMH_WAIT_EXEC, UMH_NO_WAIT). */
export type WaitMode = 'Process' | 'Exec' | 'None';
export const WAIT_MODES: readonly WaitMode[] = ['Process', 'Exec', 'None'];

export type RunPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed';

/** What a request does to the module: load it (modprobe -q --) or remove it (modprobe -r -q --). */
export type Action = 'Load' | 'Remove';
export const ACTIONS: readonly Action[] = ['Load', 'Remove'];
export const DEFAULT_ACTION: Action = 'Load';

/** Why a run ended the way it did; stable strings for automation. */
export const Reason = {
  /** The helper exited 0 (wait: Process). */
  Completed: 'Completed',
  /** The helper started (wait: Exec). */
  Started: 'Started',
  /** The helper was dispatched without waiting (wait: None). */
  Dispatched: 'Dispatched',
  /**
   * The helper exited non-zero. When the kernel refused a module system call, the message
   * carries its errno (status errno) and the kernel's own line (status kernelLog).
   */
  ExitCode: 'ExitCode',
  /** modprobe exited 0, but a module of the resolved set is not in the kernel (e.g. an install line that only pretends). */
  NotLoaded: 'NotLoaded',
  /** Every module was already in the kernel and modprobe made no module system call. */
  AlreadyLoaded: 'AlreadyLoaded',
  /** spec.action Remove: modprobe -r exited 0 and the module is gone from the kernel. */
  Removed: 'Removed',
  /** spec.action Remove: the module was not loaded; nothing was removed. */
  AlreadyRemoved: 'AlreadyRemoved',
  /** spec.action Remove: the module is in use (holders or references); the message names them. */
  InUse: 'InUse',
  /** spec.action Remove: the module is built into the kernel and cannot be removed. */
  BuiltIn: 'BuiltIn',
  /** spec.action Remove: the module has no exit function; the kernel never unloads it. */
  Permanent: 'Permanent',
  /** spec.action Remove: modprobe -r exited 0, but the module is still in the kernel. */
  NotRemoved: 'NotRemoved',
  /** The helper was killed by a signal it did not get from us. */
  Signaled: 'Signaled',
  /** The helper ran longer than timeoutSeconds; it and every process it started were killed. */
  Timeout: 'Timeout',
  /** The helper could not be executed (ENOENT, EACCES, ...). */
  ExecFailed: 'ExecFailed',
  /** The agent's helper path is empty: module loading is disabled on this node. */
  HelperDisabled: 'HelperDisabled',
  /** Every helper slot stayed busy for the whole busy timeout. */
  Throttled: 'Throttled',
  /**
   * The module policy refused the module, a module modprobe would load for it, one of its
   * parameters, or parameters for a module the node loads through an `install` command.
   */
  Denied: 'Denied',
  /** spec.dryRun: resolved and checked as for a real load; the helper was not run. */
  DryRun: 'DryRun',
  /** modprobe could not resolve the module on the node (unknown name or alias); nothing was run. */
  ResolveFailed: 'ResolveFailed',
  /** The spec failed validation (something invalid got past admission). */
  InvalidSpec: 'InvalidSpec',
  /** The targeted node does not exist. */
  NodeNotFound: 'NodeNotFound',
  /** The node was deleted before its run finished. */
  NodeDeleted: 'NodeDeleted',
  /** A claimed run was found without a result after an agent restart; it is run again. */
  Interrupted: 'Interrupted',
  /** Waiting for the agent to pick the run up. */
  Dispatching: 'Dispatching',
  /** The agent claimed the run and is (about to be) running the helper. */
  Running: 'Running',
} as const;
export type ReasonName = (typeof Reason)[keyof typeof Reason];

export interface ModuleRequestSpec {
  module: string;
  /** Load (default) or Remove; a removal takes no parameters. */
  action?: Action;
  parameters?: string[];
  nodeName?: string;
  nodeSelector?: Record<string, string>;
  wait?: WaitMode;
  timeoutSeconds?: number;
  /**
   * Resolve and check policy on every targeted node exactly as for a real load, record what
   * would be loaded (status.nodes[].resolved), and stop before running the helper. Default false.
   */
  dryRun?: boolean;
}

/** metav1.Condition */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** One node's outcome, as shown in ModuleRequest.status.nodes[]. */
export interface NodeResult {
  nodeName: string;
  phase: RunPhase;
  reason?: string;
  message?: string;
  exitCode?: number;
  signal?: string;
  stderrTail?: string;
  startTime?: string;
  finishTime?: string;
  bootID?: string;
  attempt?: number;
  /** The modules modprobe resolves the request to on this node (aliases, dependencies, softdeps). */
  resolved?: string[];
  /** Modules confirmed in the kernel after a load, or confirmed gone after a removal. */
  verified?: string[];
  /** Symbolic errno of the module system call the kernel refused (EINVAL, EPERM, EKEYREJECTED, ...). */
  errno?: string;
  /** The kernel's log lines about the run's modules during the helper's run (bounded, control characters stripped). */
  kernelLog?: string;
}

export interface PhaseCounts {
  total: number;
  pending: number;
  running: number;
  succeeded: number;
  failed: number;
}

export interface ModuleRequestStatus {
  observedGeneration?: number;
  phase?: RunPhase;
  target?: string;
  progress?: string;
  exitCode?: number;
  counts?: PhaseCounts;
  nodesOmitted?: number;
  nodes?: NodeResult[];
  conditions?: Condition[];
}

export interface ModuleRequest {
  apiVersion?: string;
  kind?: string;
  metadata: V1ObjectMeta;
  spec: ModuleRequestSpec;
  status?: ModuleRequestStatus;
}

export interface ModuleRunSpec {
  nodeName: string;
  module: string;
  /** Copied from the request: Load (default) or Remove. */
  action?: Action;
  parameters?: string[];
  wait: WaitMode;
  timeoutSeconds: number;
  /** The request generation this run carries out. */
  requestGeneration?: number;
  /** The node boot ID this run is for; changed by the controller when the node reboots. */
  bootID?: string;
  /** Copied from the request: resolve and check, never run the helper. */
  dryRun?: boolean;
}

export interface ModuleRunStatus {
  observedGeneration?: number;
  phase?: RunPhase;
  reason?: string;
  message?: string;
  exitCode?: number;
  signal?: string;
  stderrTail?: string;
  stderrBytes?: number;
  startTime?: string;
  finishTime?: string;
  bootID?: string;
  attempt?: number;
  claimedBy?: string;
  /**
   * What modprobe resolves the run to on this node, in load order (dependencies and softdeps
   * included, modules the node loads through an `install` command too); at most MAX_RESOLVED
   * entries.
   */
  resolved?: string[];
  /** Modules confirmed in the kernel after a load (built-in ones count), or confirmed gone after a removal. */
  verified?: string[];
  /** Symbolic errno of the module system call the kernel refused (EINVAL, EPERM, EKEYREJECTED, ...). */
  errno?: string;
  /**
   * The kernel's log lines about the run's modules during the helper's run: at most
   * MAX_KERNEL_LOG_BYTES and MAX_KERNEL_LOG_LINES, C0/C1 control characters stripped.
   */
  kernelLog?: string;
}

export interface ModuleRun {
  apiVersion?: string;
  kind?: string;
  metadata: V1ObjectMeta;
  spec: ModuleRunSpec;
  status?: ModuleRunStatus;
}

/** Defaults the CRD applies; applied again when reading objects that predate them. */
export const DEFAULT_WAIT: WaitMode = 'Process';
export const DEFAULT_TIMEOUT_SECONDS = 60;
export const MAX_TIMEOUT_SECONDS = 3600;
/** The most entries status.resolved (and status.verified) holds (the CRDs' maxItems). */
export const MAX_RESOLVED = 64;
/** The most bytes status.kernelLog holds (the CRDs' maxLength). */
export const MAX_KERNEL_LOG_BYTES = 1024;
/** The most lines status.kernelLog holds. */
export const MAX_KERNEL_LOG_LINES = 8;

/** A spec's action, with the default applied. */
export function actionOf(spec: { action?: Action }): Action {
  return spec.action ?? DEFAULT_ACTION;
}

/** True for phases that will not change without a new generation or boot. */
export function isTerminal(phase: RunPhase | undefined): boolean {
  return phase === 'Succeeded' || phase === 'Failed';
}

/** The ModuleRequest that controls a run (its ownerReference with controller: true), if any. */
export function controllingRequest(run: ModuleRun): V1OwnerReference | undefined {
  return run.metadata.ownerReferences?.find((o) => o.kind === 'ModuleRequest' && o.controller);
}
