/**
 * The kmod.dev/v1alpha1 API: ModuleRequest (what a person asks for) and
 * NodeModules (one per node, named after it: the requests that apply to the
 * node, written by the controller, and their results there, written by the
 * node's agent; docs/nodemodules.md). The CRDs in crds/ are the schema the
 * apiserver enforces; these types describe the same objects for the
 * TypeScript side.
 */
import type { V1ObjectMeta } from '@kubernetes/client-node';

export const GROUP = 'kmod.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const REQUEST_PLURAL = 'modulerequests';
export const NODE_MODULES_PLURAL = 'nodemodules';

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
  /**
   * The node already holds MAX_REQUESTS_PER_NODE requests (or its spec budget is spent): this
   * one waits (Pending) and is placed when room frees up.
   */
  NodeFull: 'NodeFull',
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

/** Defaults the CRD applies; applied again when reading objects that predate them. */
export const DEFAULT_WAIT: WaitMode = 'Process';
export const DEFAULT_TIMEOUT_SECONDS = 60;
export const MAX_TIMEOUT_SECONDS = 3600;
/** The most entries status.resolved (and status.verified) holds (the CRDs' maxItems). */
export const MAX_RESOLVED = 64;

/** True for phases that will not change without a new generation or boot. */
export function isTerminal(phase: RunPhase | undefined): boolean {
  return phase === 'Succeeded' || phase === 'Failed';
}

/**
 * One request as it applies to one node: an entry of NodeModules.spec.requests, written by the
 * controller from the ModuleRequest (which it names, by name and UID, at one generation).
 */
export interface NodeModulesRequest {
  name: string;
  uid: string;
  /** The request's creationTimestamp: on a node, requests for one module run in this order. */
  created?: string;
  /** The ModuleRequest generation to carry out; a new one runs again. */
  generation: number;
  module: string;
  /** Copied from the request: Load (default) or Remove. */
  action?: Action;
  parameters?: string[];
  wait: WaitMode;
  timeoutSeconds: number;
  dryRun?: boolean;
}

/** One request's result on one node: an entry of NodeModules.status.results, written by the agent. */
export interface NodeModulesResult {
  name: string;
  uid: string;
  /** The request generation this result is for. */
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

export interface NodeModulesSpec {
  /** The node's boot ID the requests are for (from the Node); a result of another boot runs again. */
  bootID?: string;
  /** The requests that apply to the node, oldest first. */
  requests?: NodeModulesRequest[];
}

/** Counts over the requests of the spec the agent last acted on (for `kubectl get nodemodules`). */
export interface NodeModulesSummary {
  requests: number;
  succeeded: number;
  failed: number;
  pending: number;
  running: number;
}

export interface NodeModulesStatus {
  /** The metadata.generation of the spec the agent last acted on. */
  observedGeneration?: number;
  /** The agent process (instance) that wrote this status last. */
  agent?: string;
  summary?: NodeModulesSummary;
  /** The most recent failure among the requests, in one line. */
  lastFailure?: string;
  results?: NodeModulesResult[];
}

/** One per node, named after it and owned by its Node; see the module comment. */
export interface NodeModules {
  apiVersion?: string;
  kind?: string;
  metadata: V1ObjectMeta;
  spec: NodeModulesSpec;
  status?: NodeModulesStatus;
}

/**
 * The most requests one node holds (the CRD's maxItems). With the spec and status budgets below,
 * a full object stays far below etcd's 1.5 MiB request limit (docs/nodemodules.md measures it).
 */
export const MAX_REQUESTS_PER_NODE = 256;
/** Bytes of JSON the controller lets a node's spec.requests take; a request past it waits NodeFull. */
export const NODE_SPEC_BUDGET_BYTES = 256 * 1024;
/** Bytes of JSON the agent lets a node's status.results take; it trims finished results' bulky fields first. */
export const NODE_STATUS_BUDGET_BYTES = 384 * 1024;
/** The CRD's bounds on a result's text fields (the agent cuts to them before writing). */
export const RESULT_LIMITS = {
  message: 1024,
  stderrTail: 1024,
  lastFailure: 512,
  kernelLog: 1024,
  names: 64,
  name: 64,
  errno: 32,
} as const;

/** The most bytes status.kernelLog holds (the CRDs' maxLength). */
export const MAX_KERNEL_LOG_BYTES = 1024;
/** The most lines status.kernelLog holds. */
export const MAX_KERNEL_LOG_LINES = 8;

/** A spec's action, with the default applied. */
export function actionOf(spec: { action?: Action }): Action {
  return spec.action ?? DEFAULT_ACTION;
}
