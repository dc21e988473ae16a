#!/usr/bin/env node
/**
 * kmod-operator's command line: `controller`, `agent`, `local` and `cluster`.
 * main only parses flags and wires parts together; each part lives in its
 * own folder (src/controller, src/agent, src/local, src/cluster).
 *
 * Each command imports its part when it runs (`await import`), not at the
 * top: an agent process then never loads the controller, local mode or the
 * control-plane code, and in the bundle the image runs (scripts/bundle.ts)
 * each part is a chunk of its own that only its command reads.
 */
import { accessSync, constants } from 'node:fs';
import { Registry, collectDefaultMetrics } from 'prom-client';
import {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_CAPABILITIES,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_FREEZE_WAIT_MS,
  DEFAULT_DMESG,
  DEFAULT_MAX_CONCURRENT,
  DEFAULT_RESOLVE_CONCURRENCY,
  DEFAULT_SHUTDOWN_GRACE_MS,
  DEFAULT_TRACER,
} from '../agent/defaults.ts';
import { DEFAULT_CONCURRENCY, DEFAULT_NODE_CONCURRENCY } from '../controller/defaults.ts';
import { parseCapList } from '../helper/capabilities.ts';
import { parseFlags } from './argv.ts';
import { labelKeyError } from '../api/validation.ts';
import { loadKubeConfig } from '../kube/config.ts';
import { startHealthServer } from '../observability/health.ts';
import { createLogger, errorMessage, type Logger } from '../observability/logger.ts';

const USAGE = `usage: kmod-operator <command> [flags]   (-h, --help on any command: this text)

commands:
  controller   resolve ModuleRequests to nodes, write each node's NodeModules, report status
  agent        carry out the requests of this node's NodeModules (run as a DaemonSet)
  local        everything on this machine: control plane, CRDs, controller, one agent, examples
  cluster up|down
               start (in the background) or stop the local control plane; writes .local/kubeconfig

common flags:
  --kubeconfig PATH        kubeconfig (default: $KUBECONFIG, in-cluster, ~/.kube/config)
  --metrics-address ADDR   /metrics, /healthz, /readyz (controller :8080, agent :8081)

controller flags:
  --leader-elect           use a Lease so only one replica reconciles (default: off)
  --leader-election-namespace NS   (default: $POD_NAMESPACE or kmod-system)
  --concurrency N          parallel reconciles of requests (default ${DEFAULT_CONCURRENCY})
  --node-concurrency N     parallel reconciles of nodes: NodeModules spec writes in flight at once
                           (default ${DEFAULT_NODE_CONCURRENCY})
  --exclude-nodes-with-label KEY   keep nodes carrying label KEY (any value) out of nodeSelector
                           targets, unless the selector names KEY; repeatable. deploy/ and the
                           chart pass node-role.kubernetes.io/control-plane (default: none)

agent flags:
  --node-name NAME         this node (default: $NODE_NAME)
  --helper PATH            the module helper, fixed for the agent's life (default /sbin/modprobe;
                           an empty value disables module loading on this node)
  --resolver PATH          the modprobe asked, before exec, what a request really loads (aliases,
                           dependencies, softdeps, install commands); the policy and the node's
                           blacklists judge every module of that set, and a load is verified against
                           it (default /sbin/modprobe; empty = the requested name only, no verification)
  --modprobe-args ARGS     modprobe flags for the helper and the resolver alike, placed before -q
                           (default none: the helper's argv is the kernel's, -q -- MODULE), e.g.
                           --modprobe-args '-d ROOT -S VERSION -C CONFDIR'
  --resolve-concurrency N  resolutions at once; dry runs wait behind loads (default ${DEFAULT_RESOLVE_CONCURRENCY})
  --tracer PATH            strace, run around the helper of wait: Process runs for the kernel's errno
                           of a refused module call (default ${DEFAULT_TRACER}; empty = none, the reason
                           then comes from the kernel log alone)
  --dmesg PATH             util-linux dmesg, for the kernel's own lines about a run; needs CAP_SYSLOG
                           (default ${DEFAULT_DMESG}; empty = none)
  --max-concurrent N       helpers alive at once (default ${DEFAULT_MAX_CONCURRENT}, the kernel's MAX_KMOD_CONCURRENT)
  --busy-timeout SECONDS   wait for a free helper slot before failing Throttled (default ${DEFAULT_BUSY_TIMEOUT_MS / 1000})
  --capability-bounding LIST    helper's bounding set, comma-separated (default ${DEFAULT_CAPABILITIES.bounding.join(',')})
  --capability-inheritable LIST helper's inheritable set (default ${DEFAULT_CAPABILITIES.inheritable.join(',') || 'empty'})
  --boot-id-source kernel|node  where the node's boot ID comes from: the kernel (default) or the
                           Node object's status.nodeInfo.bootID (simulated nodes)
  --boot-id-file PATH      the kernel's boot ID file (default /proc/sys/kernel/random/boot_id)
  --policy-configmap NS/NAME   module policy (allow/deny regexes), checked before every exec;
                           a missing or invalid policy refuses every module (fail closed)
  --config-configmap NS/NAME   runtime capability masks (capabilityBounding, capabilityInheritable):
                           they may only narrow the flags' masks; widening is refused
  --drain-timeout SECONDS  disabling waits this long for running helpers, else re-enables (default ${DEFAULT_DRAIN_TIMEOUT_MS / 1000})
  --freeze-wait SECONDS    a run waits this long while helpers are Freezing/Disabled, then stays
                           pending until the node is enabled (default ${DEFAULT_FREEZE_WAIT_MS / 1000})
  --shutdown-grace SECONDS on SIGTERM, how long running helpers may drain (default ${DEFAULT_SHUTDOWN_GRACE_MS / 1000}; keep it
                           below the pod's terminationGracePeriodSeconds)

local flags:
  --kubeconfig PATH        use this cluster instead of starting the local control plane
  --examples DIR           ModuleRequests to apply (default examples/)
  --exit-after SECONDS     stop by itself after this long (default: run until Ctrl-C)
`;

class UsageError extends Error {}

/** `-h`, `--help` (on any command) and `help`: the usage on stdout, exit 0. */
function help(): void {
  process.stdout.write(USAGE);
}

function fail(message: string): never {
  throw new UsageError(message);
}

function positiveInt(flag: string, value: string | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) fail(`--${flag} must be a whole number >= 1, got "${value}"`);
  return n;
}

function nonNegative(flag: string, value: string | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) fail(`--${flag} must be a number >= 0, got "${value}"`);
  return n;
}

/** A flag in seconds, as milliseconds; the default is given in milliseconds. */
function seconds(flag: string, value: string | undefined, dfltMs: number): number {
  return value === undefined ? dfltMs : nonNegative(flag, value, 0) * 1000;
}

function bootIdSource(value: string): 'kernel' | 'node' {
  if (value !== 'kernel' && value !== 'node') fail(`--boot-id-source must be kernel or node, got "${value}"`);
  return value;
}

function configMapRef(
  flag: string,
  value: string | undefined,
): { namespace: string; name: string } | undefined {
  if (value === undefined) return undefined;
  const [namespace, name, ...rest] = value.split('/');
  if (!namespace || !name || rest.length) fail(`--${flag} must be NAMESPACE/NAME, got "${value}"`);
  return { namespace, name };
}

/** A tool's path flag: '' = off (undefined); otherwise an absolute path to an executable file. */
function optionalTool(flag: string, value: string, pkg: string): string | undefined {
  if (value === '') return undefined;
  if (!value.startsWith('/'))
    fail(`--${flag} must be an absolute path (or empty to go without), got "${value}"`);
  try {
    accessSync(value, constants.X_OK);
  } catch {
    fail(`--${flag} ${value} is not an executable file: install ${pkg}, or pass --${flag}= to go without`);
  }
  return value;
}

function capList(flag: string, value: string | undefined, dflt: readonly string[]): string[] {
  if (value === undefined) return [...dflt];
  try {
    return parseCapList(`--${flag}`, value);
  } catch (err) {
    fail((err as Error).message);
  }
}

/** Stops `stop` on SIGTERM/SIGINT; a second signal exits at once. */
function onShutdown(
  stop: () => Promise<void>,
  log: { info: (m: string, meta?: object) => void },
): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const handler = (signal: NodeJS.Signals) => {
      if (stopping) process.exit(130);
      stopping = true;
      log.info('shutting down', { signal });
      stop().then(resolve, (err: unknown) => {
        console.error(errorMessage(err));
        resolve();
      });
    };
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
  });
}

/**
 * Serves /metrics, /healthz and /readyz for `component`, starts it, and on SIGTERM/SIGINT stops it
 * (then the server). Resolves once stopped.
 */
async function serveUntilSignal(
  name: string,
  component: { start(): Promise<void>; readiness(): string | undefined },
  stop: () => Promise<void>,
  address: string,
  registry: Registry,
  logger: Logger,
): Promise<void> {
  const health = await startHealthServer({ address, registry, readiness: () => component.readiness() });
  logger.info(`${name} starting`, { metricsPort: health.port });
  const done = onShutdown(async () => {
    await stop();
    await health.close();
  }, logger);
  await component.start();
  await done;
}

async function controllerCommand(args: string[]): Promise<void> {
  const values = parseFlags(args, {
    kubeconfig: { type: 'string' },
    'metrics-address': { type: 'string', default: ':8080' },
    'leader-elect': { type: 'boolean', default: false },
    'leader-election-namespace': { type: 'string' },
    concurrency: { type: 'string' },
    'node-concurrency': { type: 'string' },
    'exclude-nodes-with-label': { type: 'string', multiple: true, default: [] },
  });
  if (values === 'help') return help();
  const excludeNodesWithLabels = values['exclude-nodes-with-label'];
  for (const key of excludeNodesWithLabels) {
    const error = labelKeyError(key, '--exclude-nodes-with-label');
    if (error) fail(error);
  }
  // Flags are checked before anything connects: a typo is named, not hidden behind a kubeconfig error.
  const tuning = {
    concurrency: positiveInt('concurrency', values.concurrency, DEFAULT_CONCURRENCY),
    nodeConcurrency: positiveInt('node-concurrency', values['node-concurrency'], DEFAULT_NODE_CONCURRENCY),
  };
  const logger = createLogger('controller');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const kc = loadKubeConfig(values.kubeconfig);
  const { Controller } = await import('../controller/controller.ts');
  const controller = new Controller({
    kc,
    logger,
    registry,
    tuning,
    targets: { excludeNodesWithLabels },
    leaderElection: values['leader-elect']
      ? { namespace: values['leader-election-namespace'] ?? process.env.POD_NAMESPACE ?? 'kmod-system' }
      : false,
    onLostLeadership: () => {
      logger.error('lost the leader lease; exiting so that a fresh process campaigns again');
      process.exit(1);
    },
  });
  await serveUntilSignal(
    'controller',
    controller,
    () => controller.stop(),
    values['metrics-address'],
    registry,
    logger,
  );
}

async function agentCommand(args: string[]): Promise<void> {
  const values = parseFlags(args, {
    kubeconfig: { type: 'string' },
    'metrics-address': { type: 'string', default: ':8081' },
    'node-name': { type: 'string' },
    helper: { type: 'string', default: '/sbin/modprobe' },
    resolver: { type: 'string', default: '/sbin/modprobe' },
    'modprobe-args': { type: 'string', default: '' },
    // Replaced by --modprobe-args (the helper never got these: issue 18); refused with a pointer.
    'resolver-args': { type: 'string' },
    'resolve-concurrency': { type: 'string' },
    tracer: { type: 'string', default: DEFAULT_TRACER },
    dmesg: { type: 'string', default: DEFAULT_DMESG },
    'max-concurrent': { type: 'string' },
    'busy-timeout': { type: 'string' },
    'capability-bounding': { type: 'string' },
    'capability-inheritable': { type: 'string' },
    'boot-id-file': { type: 'string' },
    'boot-id-source': { type: 'string', default: 'kernel' },
    'policy-configmap': { type: 'string' },
    'config-configmap': { type: 'string' },
    'drain-timeout': { type: 'string' },
    'freeze-wait': { type: 'string' },
    'shutdown-grace': { type: 'string' },
  });
  if (values === 'help') return help();
  const nodeName = values['node-name'] ?? process.env.NODE_NAME;
  if (!nodeName) fail('agent needs --node-name (or NODE_NAME from the downward API)');
  const helper = values.helper;
  if (helper !== '' && !helper.startsWith('/'))
    fail(`--helper must be an absolute path (or empty to disable), got "${helper}"`);
  const resolverPath = values.resolver;
  if (resolverPath !== '' && !resolverPath.startsWith('/'))
    fail(
      `--resolver must be an absolute path (or empty for a policy on requested names only), got "${resolverPath}"`,
    );
  if (values['resolver-args'] !== undefined)
    fail(
      '--resolver-args was replaced by --modprobe-args, which the helper gets too: the policy must judge ' +
        'the configuration the helper runs with',
    );
  const modprobeArgs = values['modprobe-args'].split(/\s+/).filter(Boolean);
  const tracer = optionalTool('tracer', values.tracer, 'strace');
  const dmesg = optionalTool('dmesg', values.dmesg, 'util-linux');
  // Flags are checked before anything connects, so a typo fails at once with the flag's name.
  const capabilities = {
    bounding: capList('capability-bounding', values['capability-bounding'], DEFAULT_CAPABILITIES.bounding),
    inheritable: capList(
      'capability-inheritable',
      values['capability-inheritable'],
      DEFAULT_CAPABILITIES.inheritable,
    ),
  };
  const logger = createLogger('agent');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const kc = loadKubeConfig(values.kubeconfig);
  const { Agent } = await import('../agent/agent.ts');
  const agent = new Agent({
    kc,
    nodeName,
    helperPath: helper,
    logger,
    registry,
    maxConcurrent: positiveInt('max-concurrent', values['max-concurrent'], DEFAULT_MAX_CONCURRENT),
    busyTimeoutMs: seconds('busy-timeout', values['busy-timeout'], DEFAULT_BUSY_TIMEOUT_MS),
    capabilities,
    bootIdFile: values['boot-id-file'],
    bootIdSource: bootIdSource(values['boot-id-source']),
    policyConfigMap: configMapRef('policy-configmap', values['policy-configmap']),
    ...(resolverPath !== '' ? { resolver: resolverPath } : {}),
    modprobeArgs,
    resolveConcurrency: positiveInt(
      'resolve-concurrency',
      values['resolve-concurrency'],
      DEFAULT_RESOLVE_CONCURRENCY,
    ),
    ...(tracer !== undefined ? { tracer } : {}),
    ...(dmesg !== undefined ? { dmesg } : {}),
    agentConfigMap: configMapRef('config-configmap', values['config-configmap']),
    drainTimeoutMs: seconds('drain-timeout', values['drain-timeout'], DEFAULT_DRAIN_TIMEOUT_MS),
    freezeWaitMs: seconds('freeze-wait', values['freeze-wait'], DEFAULT_FREEZE_WAIT_MS),
  });
  // Below the pod's terminationGracePeriodSeconds (30 in deploy/), so the drain finishes before SIGKILL.
  const shutdownGraceMs = seconds('shutdown-grace', values['shutdown-grace'], DEFAULT_SHUTDOWN_GRACE_MS);
  await serveUntilSignal(
    'agent',
    agent,
    () => agent.stop(shutdownGraceMs),
    values['metrics-address'],
    registry,
    logger,
  );
}

async function localCommand(args: string[]): Promise<void> {
  const values = parseFlags(args, {
    kubeconfig: { type: 'string' },
    examples: { type: 'string' },
    'exit-after': { type: 'string' },
  });
  if (values === 'help') return help();
  const { runLocal } = await import('../local/local.ts');
  await runLocal({
    kubeconfig: values.kubeconfig,
    examplesDir: values.examples,
    exitAfterMs:
      values['exit-after'] !== undefined
        ? nonNegative('exit-after', values['exit-after'], 0) * 1000
        : undefined,
  });
}

async function clusterCommand(args: string[]): Promise<void> {
  if (args.includes('--help') || args.includes('-h')) return help();
  const [sub] = args;
  const { clusterDown, clusterServe, clusterUp } = await import('../cluster/background.ts');
  if (sub === 'up') await clusterUp();
  else if (sub === 'down') await clusterDown();
  else if (sub === 'serve') await clusterServe();
  else fail(`cluster needs "up" or "down", got ${sub === undefined ? 'nothing' : `"${sub}"`}`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'controller':
      return controllerCommand(rest);
    case 'agent':
      return agentCommand(rest);
    case 'local':
      return localCommand(rest);
    case 'cluster':
      return clusterCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      return help();
    default:
      fail(`unknown command "${command}"`);
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (err: unknown) => {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kmod-operator: ${(err as Error).message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`kmod-operator: ${errorMessage(err)}\n`);
    process.exit(1);
  },
);
