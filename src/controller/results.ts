/**
 * What a node's NodeModules says about one request: its result there, as the
 * request's status lists it. Pure, unit-tested without a cluster.
 *
 * A result counts only when it is for the request as it is now (same UID,
 * same generation) and for the node's current boot: a result of an earlier
 * boot means the module is gone, and the agent runs the request again.
 *
 * A dry run is the exception once it is answered: it changed nothing on the
 * node, so its answer does not expire with a boot, and once the request's
 * stored status holds it the entry leaves the node (answeredDryRuns), so a
 * burst of dry runs drains through a node's 256 places instead of filling it.
 */
import {
  Reason,
  isTerminal,
  type ModuleRequest,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesResult,
  type NodeResult,
} from '../api/types.ts';

const byUid = new WeakMap<NodeModules, Map<string, NodeModulesResult>>();

/** The object's results by request UID (computed once per cached object). */
export function resultsOf(nm: NodeModules | undefined): ReadonlyMap<string, NodeModulesResult> {
  if (!nm) return new Map();
  let m = byUid.get(nm);
  if (!m) {
    m = new Map((nm.status?.results ?? []).map((r) => [r.uid, r]));
    byUid.set(nm, m);
  }
  return m;
}

/**
 * True when `result` was recorded on a boot other than `bootID` (both known): the node rebooted
 * since, so what it loaded is gone.
 */
export function onEarlierBoot(result: NodeModulesResult, bootID: string | undefined): boolean {
  return !!bootID && !!result.bootID && result.bootID !== bootID;
}

/** The result of `entry` on a node whose current boot is `bootID`, if it has a final one. */
export function finishedResult(
  entry: Pick<NodeModulesRequest, 'uid' | 'generation'>,
  result: NodeModulesResult | undefined,
  bootID: string | undefined,
): NodeModulesResult | undefined {
  if (!result || result.uid !== entry.uid || result.observedGeneration !== entry.generation) return undefined;
  if (!isTerminal(result.phase) || onEarlierBoot(result, bootID)) return undefined;
  return result;
}

/**
 * The request's result on `nodeName`, from that node's NodeModules (undefined: not created yet)
 * and the node's current boot ID (from the Node).
 */
export function resultOn(
  req: ModuleRequest,
  nodeName: string,
  nm: NodeModules | undefined,
  bootID: string | undefined,
): NodeResult {
  const uid = req.metadata.uid ?? '';
  const generation = req.metadata.generation ?? 1;
  const r = resultsOf(nm).get(uid);
  if (!r || r.observedGeneration !== generation || !r.phase) {
    return { nodeName, phase: 'Pending', reason: Reason.Dispatching, message: 'waiting for the node agent' };
  }
  if (isTerminal(r.phase) && onEarlierBoot(r, bootID)) {
    return {
      nodeName,
      phase: 'Pending',
      reason: Reason.Dispatching,
      message: `node rebooted (boot ${bootID}); waiting for the node agent to run it again`,
    };
  }
  const out: NodeResult = { nodeName, phase: r.phase };
  for (const k of RESULT_FIELDS)
    if (r[k] !== undefined) (out as unknown as Record<string, unknown>)[k] = r[k];
  return out;
}

/**
 * The nodes whose dry-run answer the request's stored status (as the API server has it, not a
 * write still on its way) holds for the request's current generation, with that answer. Only
 * an agent's answer counts (it has a finishTime): a node that is missing, full or refused the
 * dispatch has no answer and keeps being tried. The request's entry leaves these nodes, and
 * its status keeps listing their answers from here. A request listing more than
 * MAX_LISTED_NODES nodes omits its successes, so those stay on their nodes as before.
 */
export function answeredDryRuns(req: ModuleRequest): ReadonlyMap<string, NodeResult> {
  const answered = new Map<string, NodeResult>();
  const status = req.status;
  if (!req.spec.dryRun || !status || status.observedGeneration !== (req.metadata.generation ?? 1))
    return answered;
  for (const n of status.nodes ?? [])
    if (isTerminal(n.phase) && n.finishTime !== undefined) answered.set(n.nodeName, n);
  return answered;
}

/** The fields of a node's result that the request's status lists. */
const RESULT_FIELDS = [
  'reason',
  'message',
  'exitCode',
  'signal',
  'stderrTail',
  'startTime',
  'finishTime',
  'bootID',
  'attempt',
  'resolved',
  'verified',
  'errno',
  'kernelLog',
] as const;
