/**
 * Command line of `kubectl modprobe`: flags as kubectl users expect them
 * (`--node`, `-l`, `-o`, `--kubeconfig`, `--context`, `-n`), parsed into
 * Options or a usage error naming the flag. Pure.
 */
import { parseArgs } from 'node:util';
import type { Action, WaitMode } from '../../api/types.ts';
import { MAX_TIMEOUT_SECONDS } from '../../api/types.ts';

export const USAGE = `Load a kernel module on cluster nodes, the way modprobe would (a kmod.dev ModuleRequest).

Usage:
  kubectl modprobe (--node NODE | -l SELECTOR | --all-nodes) [flags] MODULE [PARAM=VALUE...]
  kubectl modprobe (--node NODE | -l SELECTOR | --all-nodes) [flags] -r MODULE

With -l or --all-nodes the request is a one-off: it is deleted once every node
reported, on Ctrl-C and when the wait times out, so it never stands to load the
module on nodes that join later or again after a node reboots (--keep keeps it).

Examples:
  kubectl modprobe --node worker-1 nvidia_uvm
  kubectl modprobe -l nvidia.com/gpu.present=true nvidia_uvm uvm_perf_prefetch_enable=0
  kubectl modprobe --all-nodes --dry-run fs-ext4 -o yaml
  kubectl modprobe --node worker-1 -r dummy

Flags:
      --node NODE            load on this node
  -l, --selector SELECTOR    load on every node with these labels (key=value[,key=value...])
      --all-nodes            load on every node (nodes that join later included)
      --dry-run              resolve and check on each node, load nothing (spec.dryRun)
  -r, --remove               remove the module instead (modprobe -r; spec.action: Remove), where the
                             module policy's allowRemove allows it; takes no PARAM=VALUE
      --wait MODE            process (default): wait for the exit status; exec: until the helper
                             started; none: until it was dispatched (the kernel's UMH_WAIT_*)
      --timeout DURATION     kill the helper after this long (30s, 2m, 90; default 60s, max 1h);
                             the result is awaited for this long plus 60s
      --rm                   delete the request once its result is reported (or on Ctrl-C,
                             which cancels runs still waiting for a slot); the default for
                             -l and --all-nodes
      --keep                 keep a -l/--all-nodes request standing: it then loads the module
                             on matching nodes that join later, and again after a reboot
  -o, --output FORMAT        print the final ModuleRequest as yaml or json
  -v, --verbose              say which request was created and each node's result
      --kubeconfig PATH      kubeconfig file (default: $KUBECONFIG, ~/.kube/config)
      --context NAME         kubeconfig context to use
  -n, --namespace NS         accepted for kubectl habit; ModuleRequests are cluster-scoped
  -h, --help                 this help

The request is named modprobe-MODULE-xxxxx and labelled
app.kubernetes.io/managed-by=kubectl-modprobe: list them with
  kubectl get mr -l app.kubernetes.io/managed-by=kubectl-modprobe
and delete them with
  kubectl delete mr -l app.kubernetes.io/managed-by=kubectl-modprobe

Exit status: for one node, the helper's own exit status (modprobe: 0 or 1). Otherwise
  0 all nodes succeeded       64 invalid flags or spec       69 node not found, API unreachable
  75 throttled (try again)    77 denied (policy or RBAC)     124 timed out
  126 helper cannot execute   128+N killed by signal N       130 interrupted (Ctrl-C)
With several nodes: the status the first failed node (by name) would give alone.
`;

/** What the user asked for. */
export interface Options {
  module: string;
  parameters: string[];
  /** Load (default) or Remove (`-r`). */
  action: Action;
  nodeName?: string;
  nodeSelector?: Record<string, string>;
  dryRun: boolean;
  wait: WaitMode;
  timeoutSeconds: number;
  /** Delete the request at the end, on Ctrl-C and on timeout: --rm, or a selector target without --keep. */
  rm: boolean;
  output?: 'yaml' | 'json';
  verbose: boolean;
  kubeconfig?: string;
  context?: string;
}

/** A command line that cannot be carried out; the message names the flag. */
export class UsageError extends Error {}

const WAITS: Record<string, WaitMode> = { process: 'Process', exec: 'Exec', none: 'None' };

/** The flags, shared with completion (which offers them). */
export const FLAGS = {
  node: { type: 'string' },
  selector: { type: 'string', short: 'l' },
  'all-nodes': { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  remove: { type: 'boolean', short: 'r' },
  wait: { type: 'string' },
  timeout: { type: 'string' },
  rm: { type: 'boolean' },
  keep: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  verbose: { type: 'boolean', short: 'v' },
  kubeconfig: { type: 'string' },
  context: { type: 'string' },
  namespace: { type: 'string', short: 'n' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Parses a duration: `90` (seconds), `30s`, `2m`, `1h`, `1m30s`. Returns whole seconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$/.exec(text);
  if (!text || !m || (m[1] === undefined && m[2] === undefined && m[3] === undefined)) {
    throw new UsageError(`${flag} must be a duration such as 30s, 2m or 90, got "${text}"`);
  }
  return Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
}

/** Parses `key=value[,key=value]` (equality only: spec.nodeSelector is a map). */
export function parseSelector(text: string): Record<string, string> {
  const sel: Record<string, string> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    // `key==value` is kubectl's spelling of equality too.
    const key = eq < 0 ? '' : part.slice(0, eq).trim();
    const value = eq < 0 ? '' : part.slice(eq + (part[eq + 1] === '=' ? 2 : 1)).trim();
    if (!key || /[!<>()]/.test(part) || / in | notin /.test(part)) {
      throw new UsageError(
        `-l/--selector must be key=value pairs separated by commas (a node selector is a map of labels), got "${text}"`,
      );
    }
    if (key in sel && sel[key] !== value) throw new UsageError(`-l/--selector sets ${key} twice`);
    sel[key] = value;
  }
  return sel;
}

/**
 * Whether the request is deleted once reported, on Ctrl-C and on timeout. A selector target
 * (`-l`, `--all-nodes`) is a one-off unless `--keep`: a standing selector request would load the
 * module on every matching node that joins later, and again after each reboot, long after the
 * command that made it returned. A `--node` request is deleted with `--rm` only.
 */
export function isOneOff(o: { rm: boolean; keep: boolean; selector: boolean }): boolean {
  return o.rm || (o.selector && !o.keep);
}

/** Parses the plugin's argv (without the program name). Returns 'help' for -h/--help. */
export function parseCommandLine(argv: readonly string[]): Options | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: FLAGS, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional.*$/s, ''));
  }
  const v = parsed.values;
  if (v.help) return 'help';
  const [module, ...parameters] = parsed.positionals;
  if (!module) throw new UsageError('MODULE is required (kubectl modprobe --node NODE MODULE)');
  const targets = [v.node !== undefined, v.selector !== undefined, v['all-nodes'] === true].filter(Boolean);
  if (targets.length !== 1) {
    throw new UsageError('exactly one of --node, -l/--selector or --all-nodes is required');
  }
  if (v.remove && parameters.length > 0) {
    throw new UsageError(
      `-r/--remove takes no module parameters (modprobe -r MODULE), got ${parameters.join(' ')}`,
    );
  }
  const wait = WAITS[v.wait ?? 'process'];
  if (!wait) throw new UsageError(`--wait must be process, exec or none, got "${v.wait}"`);
  const timeoutSeconds = v.timeout === undefined ? 60 : parseDuration('--timeout', v.timeout);
  if (timeoutSeconds < 1 || timeoutSeconds > MAX_TIMEOUT_SECONDS) {
    throw new UsageError(`--timeout must be from 1s to ${MAX_TIMEOUT_SECONDS / 3600}h, got "${v.timeout}"`);
  }
  if (v.output !== undefined && v.output !== 'yaml' && v.output !== 'json') {
    throw new UsageError(`-o/--output must be yaml or json, got "${v.output}"`);
  }
  if (v.rm && v.keep) throw new UsageError('--rm and --keep contradict each other: choose one');
  if (v.keep && v.node !== undefined) {
    throw new UsageError('--keep is for -l/--all-nodes (a --node request is kept unless --rm)');
  }
  const opts: Options = {
    module,
    parameters,
    action: v.remove ? 'Remove' : 'Load',
    dryRun: v['dry-run'] === true,
    wait,
    timeoutSeconds,
    rm: isOneOff({ rm: v.rm === true, keep: v.keep === true, selector: v.node === undefined }),
    verbose: v.verbose === true,
  };
  if (v.node !== undefined) opts.nodeName = v.node;
  if (v.selector !== undefined) opts.nodeSelector = parseSelector(v.selector);
  if (v['all-nodes']) opts.nodeSelector = {};
  if (v.output !== undefined) opts.output = v.output;
  if (v.kubeconfig !== undefined) opts.kubeconfig = v.kubeconfig;
  if (v.context !== undefined) opts.context = v.context;
  return opts;
}
