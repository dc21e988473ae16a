/**
 * Which nodes a ModuleRequest targets. Pure functions over cached objects:
 * the reconcile calls them, the tests call them without a cluster.
 */
import type { V1Node } from '@kubernetes/client-node';
import type { ModuleRequest } from '../api/types.ts';

/** True when every key=value of `selector` is among `labels` (an empty selector matches every node). */
export function selectorMatches(
  selector: Record<string, string>,
  labels: Record<string, string> | undefined,
): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/** The label kubeadm (and most installers) put on control-plane nodes, with an empty value. */
export const CONTROL_PLANE_LABEL = 'node-role.kubernetes.io/control-plane';

/** How selectors are resolved, cluster-wide (controller flags). */
export interface TargetOptions {
  /**
   * Label keys that keep a node out of every `nodeSelector` target whatever
   * the label's value (`--exclude-nodes-with-label`, e.g. CONTROL_PLANE_LABEL),
   * unless the selector itself names that key: `{}` then means "every node
   * but the control plane", while `{node-role.kubernetes.io/control-plane: ""}`
   * still reaches control-plane nodes because it asks for them. A `nodeName`
   * target is never excluded: naming a node is explicit.
   */
  readonly excludeNodesWithLabels?: readonly string[];
}

/**
 * The nodes a request targets, among `nodes`; `missing` names a nodeName
 * target that does not exist. Pure.
 */
export function resolveTargets(
  req: ModuleRequest,
  nodes: readonly V1Node[],
  opts: TargetOptions = {},
): { nodes: V1Node[]; missing?: string } {
  const { nodeName, nodeSelector } = req.spec;
  if (nodeName !== undefined) {
    const node = nodes.find((n) => n.metadata?.name === nodeName);
    return node ? { nodes: [node] } : { nodes: [], missing: nodeName };
  }
  const selector = nodeSelector ?? {};
  const excluded = (opts.excludeNodesWithLabels ?? []).filter((key) => !Object.hasOwn(selector, key));
  return {
    nodes: nodes.filter((n) => {
      const labels = n.metadata?.labels;
      return (
        selectorMatches(selector, labels) &&
        !excluded.some((key) => labels !== undefined && Object.hasOwn(labels, key))
      );
    }),
  };
}

/**
 * True when `node` is, or would be, one of the request's targets: what a node event can change for
 * a request. The controller reconciles only these requests on a node's join, leave, label or boot
 * change (checking the node as it was and as it is), not every request: with thousands stored, a
 * thousand nodes joining would otherwise reconcile every request once per join. Pure.
 */
export function targetsNode(req: ModuleRequest, node: V1Node, opts: TargetOptions = {}): boolean {
  if (!req.spec) return false; // invalid: its reconcile fails it whatever the nodes
  if (req.spec.nodeName !== undefined) return req.spec.nodeName === node.metadata?.name;
  return resolveTargets(req, [node], opts).nodes.length > 0;
}

/** The target in words, for `kubectl get mr`. */
export function describeTarget(req: ModuleRequest): string {
  if (req.spec.nodeName !== undefined) return `node/${req.spec.nodeName}`;
  const sel = Object.entries(req.spec.nodeSelector ?? {}).map(([k, v]) => `${k}=${v}`);
  return sel.length ? sel.join(',') : '<all nodes>';
}

/** The boot ID the kubelet (or our local mode) reports for a node; '' when unknown. */
export function bootIdOf(node: V1Node | undefined): string {
  return node?.status?.nodeInfo?.bootID ?? '';
}
