/**
 * `make run` (= `kmod-operator local`): the whole product on one machine.
 * Starts the local control plane (unless a kubeconfig is given), installs the
 * CRDs, registers this machine as a Node, starts the controller and one agent
 * in this process, applies examples/, and prints the requests' status as it
 * changes, until Ctrl-C stops everything.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { arch, hostname, release } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig, loadAllYaml, type V1Node } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Agent } from '../agent/agent.ts';
import { GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../api/types.ts';
import { startControlPlane, type ControlPlane } from '../cluster/controlplane.ts';
import { Controller } from '../controller/controller.ts';
import { installCrds } from '../kube/crds.ts';
import { isAlreadyExists, isNotFound } from '../kube/errors.ts';
import { reuseConnections } from '../kube/connections.ts';
import { startHealthServer } from '../observability/health.ts';
import { createLogger } from '../observability/logger.ts';
import { prepareDemoNode } from './demo.ts';

const root = resolve(import.meta.dirname, '../..');
const localDir = join(root, '.local');

export interface LocalOptions {
  /** Use this cluster instead of starting the local control plane. */
  kubeconfig?: string;
  examplesDir?: string;
  /** Stop by itself after this long (smoke tests); default: run until Ctrl-C. */
  exitAfterMs?: number;
  /** Where status tables go (default stdout). */
  out?: (line: string) => void;
}

/** A Node name for this machine: the hostname, lowercased to a valid node name. */
export function localNodeName(): string {
  const n = hostname()
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '');
  return n || 'localhost';
}

function readBootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/** Registers this machine as a Node (labels for the examples, the real boot ID) as a kubelet would. */
async function registerNode(kc: KubeConfig, name: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const node: V1Node = {
    metadata: {
      name,
      labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', 'kmod.dev/local-demo': 'true' },
    },
  };
  try {
    await core.createNode({ body: node });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
  }
  const current = await core.readNode({ name });
  current.status = {
    ...current.status,
    nodeInfo: {
      machineID: '',
      systemUUID: '',
      bootID: readBootId(),
      kernelVersion: release(),
      osImage: 'kmod-operator local mode',
      containerRuntimeVersion: '',
      kubeletVersion: '',
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: arch() === 'x64' ? 'amd64' : arch(),
    },
  };
  await core.replaceNodeStatus({ name, body: current });
}

/** Creates or replaces every ModuleRequest in the examples directory; returns their names. */
async function applyExamples(kc: KubeConfig, dir: string): Promise<string[]> {
  const api = kc.makeApiClient(CustomObjectsApi);
  const names: string[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()) {
    for (const obj of loadAllYaml(readFileSync(join(dir, file), 'utf8')) as ModuleRequest[]) {
      const name = obj.metadata.name ?? '';
      names.push(name);
      try {
        await api.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: REQUEST_PLURAL, name });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      for (let i = 0; ; i++) {
        try {
          await api.createClusterCustomObject({
            group: GROUP,
            version: VERSION,
            plural: REQUEST_PLURAL,
            body: obj,
          });
          break;
        } catch (err) {
          // The delete above may still be finishing.
          if (!isAlreadyExists(err) || i > 50) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
  return names;
}

/** The request table, as `kubectl get mr` would print it. */
export function statusTable(requests: ModuleRequest[]): string {
  const rows = [['NAME', 'MODULE', 'TARGET', 'SUCCEEDED', 'STATUS', 'EXIT', 'REASON']];
  for (const r of requests) {
    const failed = r.status?.conditions?.find((c) => c.type === 'Failed' && c.status === 'True');
    rows.push([
      r.metadata.name ?? '',
      r.spec.module,
      r.status?.target ?? '',
      r.status?.progress ?? '',
      r.status?.phase ?? 'Pending',
      r.status?.exitCode !== undefined ? String(r.status.exitCode) : '',
      failed?.reason ?? '',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** Runs local mode until Ctrl-C (or `exitAfterMs`). */
export async function runLocal(opts: LocalOptions = {}): Promise<void> {
  const out = opts.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  // Quiet by default so the status table stays readable; LOG_LEVEL=info shows every step as JSON.
  const logger = createLogger('local', process.env.LOG_LEVEL ?? 'error');
  mkdirSync(localDir, { recursive: true });
  let cp: ControlPlane | undefined;
  let kubeconfigPath = opts.kubeconfig;
  const stops: Array<() => Promise<void>> = [];
  try {
    if (!kubeconfigPath) {
      out('starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...');
      kubeconfigPath = join(localDir, 'local.kubeconfig');
      cp = await startControlPlane({ kubeconfigPath });
    }
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    reuseConnections(kc);
    await installCrds(kc);
    const nodeName = localNodeName();
    await registerNode(kc, nodeName);

    const demo = prepareDemoNode(join(localDir, 'demo'));
    const helper = demo.helper;
    out('');
    out(`NOTE: the helper is the real modprobe in --dry-run mode against a generated demo module tree`);
    out(`      (${helper}); it resolves names, aliases and dependencies but cannot change this kernel.`);
    out(
      `      What a load would leave in the kernel goes to a simulated /sys/module, which the agent verifies.`,
    );
    out(`      Demo modules: demo_core, demo_net (alias net-pf-99), demo_fs (alias fs-demofs), demo_pci.`);

    const registry = new Registry();
    const controller = new Controller({ kc, logger: logger.child({ component: 'controller' }), registry });
    const agent = new Agent({
      kc,
      nodeName,
      helperPath: helper,
      // What a request really loads is resolved against the same demo tree the helper uses, with
      // the same flags; a load is verified in the simulated /sys/module the helper writes.
      resolver: demo.resolver,
      modprobeArgs: demo.modprobeArgs,
      kernelRoots: demo.kernelRoots,
      bootIdSource: 'node',
      logger: logger.child({ component: 'agent' }),
      registry,
    });
    const health = await startHealthServer({
      address: '127.0.0.1:0',
      registry,
      readiness: () => controller.readiness() ?? agent.readiness(),
    });
    stops.push(
      () => health.close(),
      () => controller.stop(),
      () => agent.stop(),
    );
    await controller.start();
    await agent.start();

    const examplesDir = opts.examplesDir ?? join(root, 'examples');
    const names = await applyExamples(kc, examplesDir);
    writeFileSync(join(localDir, 'kubeconfig.path'), `${kubeconfigPath}\n`);
    out('');
    out(`api server:  ${kc.getCurrentCluster()?.server ?? '?'}`);
    out(`node:        ${nodeName} (labelled kmod.dev/local-demo=true)`);
    out(`kubeconfig:  ${kubeconfigPath}`);
    out(`try:         kubectl --kubeconfig ${kubeconfigPath} get mr`);
    out(`             kubectl --kubeconfig ${kubeconfigPath} describe mr missing-module`);
    out(`metrics:     http://127.0.0.1:${health.port}/metrics`);
    out(`applied:     ${names.join(', ')} (from ${examplesDir})`);
    out('Ctrl-C stops everything.');
    out('');

    const api = kc.makeApiClient(CustomObjectsApi);
    let lastTable = '';
    let stop = false;
    const stopped = new Promise<void>((res) => {
      const handler = () => {
        stop = true;
        res();
      };
      process.once('SIGINT', handler);
      process.once('SIGTERM', handler);
      if (opts.exitAfterMs !== undefined) setTimeout(handler, opts.exitAfterMs).unref();
    });
    while (!stop) {
      const list = (await api.listClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
      })) as {
        items: ModuleRequest[];
      };
      const table = statusTable(list.items);
      if (table !== lastTable) {
        out(`[${new Date().toISOString().slice(11, 19)}]`);
        out(table);
        out('');
        lastTable = table;
      }
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 1000))]);
    }
    out('stopping...');
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    if (cp) {
      await cp.stop();
      // The kubeconfig pointed at the control plane that just stopped.
      rmSync(join(localDir, 'local.kubeconfig'), { force: true });
    }
    rmSync(join(localDir, 'kubeconfig.path'), { force: true });
  }
  out('stopped.');
}
