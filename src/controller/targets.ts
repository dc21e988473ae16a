/**
 * Which nodes a ModuleRequest targets, and what its ModuleRun on each node
 * should look like. Pure functions over cached objects: the reconcile calls
 * them, the tests call them without a cluster.
 */
import { createHash } from 'node:crypto';
import type { V1Node } from '@kubernetes/client-node';
import {
  ANNOTATION_REQUEST_CREATED,
  API_VERSION,
  DEFAULT_TIMEOUT_SECONDS,
  actionOf,
  DEFAULT_WAIT,
  LABEL_REQUEST_NAME,
  LABEL_REQUEST_UID,
  type ModuleRequest,
  type ModuleRun,
  type ModuleRunSpec,
} from '../api/types.ts';

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

/**
 * The name of the run for (request, node): readable prefix plus a hash of the
 * request UID and node name, so names are unique per request incarnation and
 * stay within the 253-character limit whatever the request and node names.
 */
export function runName(req: ModuleRequest, nodeName: string): string {
  const hash = createHash('sha256')
    .update(`${req.metadata.uid ?? ''}/${nodeName}`)
    .digest('hex')
    .slice(0, 12);
  const prefix = (req.metadata.name ?? 'request').slice(0, 200).replace(/[-.]+$/, '');
  return `${prefix}-${hash}`;
}

/** The spec the run on `node` should have for the request's current generation. */
export function desiredRunSpec(req: ModuleRequest, node: V1Node): ModuleRunSpec {
  const spec: ModuleRunSpec = {
    nodeName: node.metadata?.name ?? '',
    module: req.spec.module,
    wait: req.spec.wait ?? DEFAULT_WAIT,
    timeoutSeconds: req.spec.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS,
    requestGeneration: req.metadata.generation ?? 1,
    bootID: bootIdOf(node),
  };
  if (req.spec.parameters?.length) spec.parameters = [...req.spec.parameters];
  if (req.spec.dryRun) spec.dryRun = true;
  if (actionOf(req.spec) === 'Remove') spec.action = 'Remove';
  return spec;
}

/** True when `current` differs from `desired` in what the request asks for (boot IDs aside: see rebooted()). */
export function runSpecDiffers(current: ModuleRunSpec, desired: ModuleRunSpec): boolean {
  return (
    current.module !== desired.module ||
    actionOf(current) !== actionOf(desired) ||
    (current.parameters ?? []).join('\0') !== (desired.parameters ?? []).join('\0') ||
    current.wait !== desired.wait ||
    current.timeoutSeconds !== desired.timeoutSeconds ||
    (current.dryRun ?? false) !== (desired.dryRun ?? false) ||
    current.requestGeneration !== desired.requestGeneration
  );
}

/**
 * True when the run finished on an earlier boot of its node: modules do not
 * survive a reboot, so a request that still stands must run again. Compared
 * with the boot the agent actually ran on (status.bootID), so a node whose
 * boot ID appears late does not trigger a needless second run.
 */
export function rebooted(run: ModuleRun, node: V1Node | undefined): boolean {
  const nodeBoot = bootIdOf(node);
  const st = run.status;
  return (
    nodeBoot !== '' &&
    st?.observedGeneration === run.metadata.generation &&
    (st?.phase === 'Succeeded' || st?.phase === 'Failed') &&
    !!st.bootID &&
    st.bootID !== nodeBoot &&
    run.spec.bootID !== nodeBoot
  );
}

/** A new ModuleRun object for (request, node), owned by the request so deleting the request deletes it. */
export function newRun(req: ModuleRequest, node: V1Node): ModuleRun {
  const labels: Record<string, string> = { [LABEL_REQUEST_UID]: req.metadata.uid ?? '' };
  // The agent orders a node's runs for one module by their requests' creation (src/agent/ordering.ts).
  const created = req.metadata.creationTimestamp as unknown as string | Date | undefined;
  const annotations: Record<string, string> = created
    ? { [ANNOTATION_REQUEST_CREATED]: created instanceof Date ? created.toISOString() : created }
    : {};
  const name = req.metadata.name ?? '';
  if (name.length <= 63) labels[LABEL_REQUEST_NAME] = name;
  return {
    apiVersion: API_VERSION,
    kind: 'ModuleRun',
    metadata: {
      name: runName(req, node.metadata?.name ?? ''),
      labels,
      ...(Object.keys(annotations).length ? { annotations } : {}),
      ownerReferences: [
        {
          apiVersion: API_VERSION,
          kind: 'ModuleRequest',
          name,
          uid: req.metadata.uid ?? '',
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: desiredRunSpec(req, node),
  };
}
