/**
 * The ModuleRequest `kubectl modprobe` creates, and how it reads one back:
 * done or not, and what to print and exit with. Pure.
 */
import { API_VERSION, type ModuleRequest, type NodeResult } from '../../api/types.ts';
import type { Options } from './args.ts';
import { Exit, exitCodeOf } from './exitcodes.ts';

/** Label on every request the plugin creates: find them, delete them. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'kubectl-modprobe';
/** Label naming the module, when it fits a label value (aliases such as pci:v0000… do not). */
export const MODULE_LABEL = 'kmod.dev/module';

const LABEL_VALUE = /^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$/;

/** `modprobe-<module>-` with the module reduced to what a DNS name may hold. */
export function namePrefix(module: string): string {
  const part = module
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return part ? `modprobe-${part}-` : 'modprobe-';
}

/** The request for these options (metadata.generateName: the API server picks the name). */
export function buildRequest(o: Options): ModuleRequest {
  const labels: Record<string, string> = { [MANAGED_BY_LABEL]: MANAGED_BY };
  if (LABEL_VALUE.test(o.module)) labels[MODULE_LABEL] = o.module;
  const spec: ModuleRequest['spec'] & { dryRun?: boolean } = {
    module: o.module,
    wait: o.wait,
    timeoutSeconds: o.timeoutSeconds,
  };
  if (o.parameters.length > 0) spec.parameters = o.parameters;
  if (o.nodeName !== undefined) spec.nodeName = o.nodeName;
  if (o.nodeSelector !== undefined) spec.nodeSelector = o.nodeSelector;
  if (o.dryRun) spec.dryRun = true;
  if (o.action === 'Remove') spec.action = 'Remove';
  return {
    apiVersion: API_VERSION,
    kind: 'ModuleRequest',
    metadata: { generateName: namePrefix(o.module), labels },
    spec,
  };
}

/**
 * True once the controller has reported, for the request's current generation,
 * every node's result (a fan-out is Failed as soon as one node fails, but the
 * others are still worth reporting), or that no node matches.
 */
export function isFinal(r: ModuleRequest): boolean {
  const st = r.status;
  if (!st || st.observedGeneration !== (r.metadata.generation ?? 1) || !st.counts) return false;
  if (st.counts.total === 0) return true;
  const outstanding = st.counts.pending + st.counts.running;
  return outstanding === 0 && (st.phase === 'Succeeded' || st.phase === 'Failed');
}

/** The live progress line for a fan-out (no newline; the caller redraws it). */
export function progressLine(r: ModuleRequest): string {
  const c = r.status?.counts;
  if (!c) return `${r.spec.module}: waiting for the controller`;
  return `${r.spec.module}: ${c.succeeded + c.failed}/${c.total} done (${c.succeeded} succeeded, ${c.failed} failed, ${c.running} running, ${c.pending} pending)`;
}

/** What to print (to stderr, as modprobe does) and the exit status. */
export interface Report {
  lines: string[];
  exitCode: number;
}

function describe(n: NodeResult): string {
  return `${n.reason ?? n.phase}${n.message ? `: ${n.message}` : ''}`;
}

/**
 * The final report. One node: the helper's stderr as it wrote it (modprobe's
 * own "modprobe: FATAL: ..." lines), then, unless the helper simply exited
 * non-zero with something to say, one line with the reason; the helper's exit
 * status. Several nodes: every line prefixed with its node, a summary, and
 * the status of the first failed node. Succeeded nodes print only with
 * `verbose` (modprobe -q is silent on success).
 */
export function finalReport(r: ModuleRequest, verbose: boolean): Report {
  const st = r.status ?? {};
  const nodes = st.nodes ?? [];
  const counts = st.counts ?? { total: nodes.length, succeeded: 0, failed: 0, running: 0, pending: 0 };
  const lines: string[] = [];
  const single = nodes.length === 1 && counts.total === 1 && r.spec.nodeName !== undefined;
  for (const n of nodes) {
    const prefix = single ? '' : `${n.nodeName}: `;
    if (n.phase === 'Succeeded') {
      if (verbose) lines.push(`${prefix}${r.spec.module}: ${describe(n)}`);
      continue;
    }
    const tail = (n.stderrTail ?? '').replace(/\n+$/, '');
    if (tail) for (const l of tail.split('\n')) lines.push(`${prefix}${l}`);
    if (!(tail && n.reason === 'ExitCode'))
      lines.push(`${prefix}kubectl-modprobe: ${r.spec.module}: ${describe(n)}`);
  }
  if (!single) {
    if ((st.nodesOmitted ?? 0) > 0) lines.push(`(${st.nodesOmitted} node(s) not listed: they succeeded)`);
    if (counts.total === 0)
      lines.push(`kubectl-modprobe: ${r.spec.module}: no node matches ${st.target ?? 'the selector'}`);
    else if (verbose || counts.failed > 0)
      lines.push(
        `kubectl-modprobe: ${r.spec.module}: ${counts.succeeded} of ${counts.total} node(s) succeeded, ${counts.failed} failed`,
      );
  }
  const failed = nodes
    .filter((n) => n.phase === 'Failed')
    .sort((a, b) => a.nodeName.localeCompare(b.nodeName));
  let exitCode: number = Exit.Ok;
  if (failed[0]) exitCode = exitCodeOf(failed[0]);
  else if (st.phase === 'Failed') exitCode = 1;
  else if (counts.total === 0) exitCode = Exit.Unavailable;
  return { lines, exitCode };
}
