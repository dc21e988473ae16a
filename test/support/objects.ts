/**
 * Test fixtures on the real control plane: simulated nodes (Node objects with
 * a boot ID, as a kubelet would register them), requests, each node's
 * NodeModules seen as one run per (node, request), and a fake helper script
 * that records every invocation.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1Node,
} from '@kubernetes/client-node';
import {
  API_VERSION,
  GROUP,
  NODE_MODULES_PLURAL,
  REQUEST_PLURAL,
  VERSION,
  type ModuleRequest,
  type ModuleRequestSpec,
  type NodeModules,
  type NodeModulesRequest,
  type NodeModulesResult,
} from '../../src/api/types.ts';
import { isAlreadyExists, isNotFound } from '../../src/kube/errors.ts';
import { eventually } from './cluster.ts';

/** Registers (or updates) a Node with labels and a boot ID. */
export async function ensureNode(
  kc: KubeConfig,
  name: string,
  labels: Record<string, string> = {},
  bootID = `${name}-boot-1`,
): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  try {
    await core.createNode({ body: { metadata: { name, labels } } });
  } catch (err) {
    if (!isAlreadyExists(err)) throw err;
    const n = await core.readNode({ name });
    n.metadata = { ...n.metadata, labels };
    await core.replaceNode({ name, body: n });
  }
  await setBootId(kc, name, bootID);
}

/** Sets node.status.nodeInfo.bootID, as the kubelet does after a reboot. */
export async function setBootId(kc: KubeConfig, name: string, bootID: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const n: V1Node = await core.readNode({ name });
  n.status = {
    ...n.status,
    nodeInfo: {
      machineID: '',
      systemUUID: '',
      bootID,
      kernelVersion: '',
      osImage: '',
      containerRuntimeVersion: '',
      kubeletVersion: '',
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: 'amd64',
    },
  };
  await core.replaceNodeStatus({ name, body: n });
}

export async function deleteNode(kc: KubeConfig, name: string): Promise<void> {
  await kc.makeApiClient(CoreV1Api).deleteNode({ name });
}

/**
 * A helper script standing in for modprobe. What it does depends on the
 * module name: ok* exits 0, fail* writes to stderr and exits 3, slow* sleeps
 * the seconds given as parameter secs=N (and exits 9 without it), hold* runs until the test calls
 * `release(module)` (so "still running" is a fact, not a race with the clock;
 * it also ends when the test process has exited and removed its directory),
 * hang* starts a background sleep (a grandchild) and sleeps. Every start and
 * end is appended to a log, with pids.
 */
export interface FakeHelper {
  path: string;
  dir: string;
  /** Lines "start PID MODULE ARGS..." and "end PID MODULE". */
  log(): string[];
  starts(module?: string): number;
  /** Lets every hold* helper for `module` (running now or started later) finish. */
  release(module: string): void;
}

export function fakeHelper(): FakeHelper {
  const dir = mkdtempSync(join(tmpdir(), 'kmod-helper-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const logPath = join(dir, 'calls.log');
  const path = join(dir, 'modprobe');
  writeFileSync(
    path,
    `#!/bin/sh
# argv: [FLAGS] [-r] -q -- MODULE [key=value...]
mod=; param=; seen=0
for a in "$@"; do case $seen in 0) [ "$a" = -- ] && seen=1 ;; 1) mod=$a; seen=2 ;; 2) param=$a; break ;; esac; done
echo "start $$ $mod $*" >> ${logPath}
case "$mod" in
  fail*) echo "modprobe: FATAL: Module $mod not found in directory /lib/modules/test" >&2; exit 3 ;;
  # Without secs=N, fail loudly: a "slow" helper that does not sleep makes a test race silently.
  slow*) case "$param" in secs=*) sleep "\${param#secs=}" ;; *) echo "slow* needs secs=N" >&2; exit 9 ;; esac ;;
  hold*) while [ ! -e ${dir}/release."$mod" ] && [ -d ${dir} ]; do sleep 0.05; done ;;
  hang*) sleep 1000 & echo "grandchild $! $mod" >> ${logPath}; sleep 1000 ;;
  # Leaves an orphan behind, as an install command that backgrounds a process does: it outlives
  # the helper, then exits, and someone must reap it.
  orphan*) sleep 1 </dev/null >/dev/null 2>&1 & echo "orphan $! $mod" >> ${logPath} ;;
  # A hostile stderr: OSC 52 (write the clipboard), OSC 0 (window title), CSI 8m (hidden text),
  # a carriage return over the line, and a C1 CSI (U+009B in UTF-8).
  term*) printf 'modprobe: FATAL: \\033]52;c;cm0gLXJmIH4K\\007\\033]0;owned\\007\\033[8mhidden\\033[0m\\rover \\302\\2331m %s\\n' "$mod" >&2; exit 1 ;;
esac
echo "end $$ $mod" >> ${logPath}
exit 0
`,
  );
  chmodSync(path, 0o755);
  const log = () =>
    existsSync(logPath) ? readFileSync(logPath, 'utf8').trim().split('\n').filter(Boolean) : [];
  return {
    path,
    dir,
    log,
    starts: (module?: string) =>
      log().filter((l) => l.startsWith('start ') && (!module || l.split(' ')[2] === module)).length,
    release: (module: string) => writeFileSync(join(dir, `release.${module}`), ''),
  };
}

const crd = (plural: string) => ({ group: GROUP, version: VERSION, plural });

export async function createRequest(
  kc: KubeConfig,
  name: string,
  spec: ModuleRequestSpec,
): Promise<ModuleRequest> {
  const api = kc.makeApiClient(CustomObjectsApi);
  return (await api.createClusterCustomObject({
    ...crd(REQUEST_PLURAL),
    body: { apiVersion: API_VERSION, kind: 'ModuleRequest', metadata: { name }, spec },
  })) as ModuleRequest;
}

/**
 * What admission says to a ModuleRequest for `module` on `nodeName`: the refusal (the API server's
 * error body as JSON), or undefined when it would be admitted. A server-side dry run: nothing is
 * stored and no run starts, so a test can probe the policy in force as often as it needs.
 */
export async function admissionRefusal(
  kc: KubeConfig,
  module: string,
  nodeName: string,
): Promise<string | undefined> {
  try {
    await kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
      ...crd(REQUEST_PLURAL),
      body: {
        apiVersion: API_VERSION,
        kind: 'ModuleRequest',
        metadata: { name: 'admission-probe' },
        spec: { module, nodeName },
      },
      dryRun: 'All',
    });
    return undefined;
  } catch (err) {
    return JSON.stringify((err as { body?: unknown }).body ?? String(err));
  }
}

export async function getRequest(kc: KubeConfig, name: string): Promise<ModuleRequest | undefined> {
  try {
    return (await kc
      .makeApiClient(CustomObjectsApi)
      .getClusterCustomObject({ ...crd(REQUEST_PLURAL), name })) as ModuleRequest;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

export async function deleteRequest(kc: KubeConfig, name: string): Promise<void> {
  await kc.makeApiClient(CustomObjectsApi).deleteClusterCustomObject({ ...crd(REQUEST_PLURAL), name });
}

export async function listRequests(kc: KubeConfig): Promise<ModuleRequest[]> {
  const list = (await kc.makeApiClient(CustomObjectsApi).listClusterCustomObject(crd(REQUEST_PLURAL))) as {
    items: ModuleRequest[];
  };
  return list.items;
}

/** Every node's NodeModules. */
export async function listNodeModules(kc: KubeConfig): Promise<NodeModules[]> {
  const list = (await kc
    .makeApiClient(CustomObjectsApi)
    .listClusterCustomObject(crd(NODE_MODULES_PLURAL))) as {
    items: NodeModules[];
  };
  return list.items;
}

/**
 * Creates node `name`'s NodeModules with `spec` (empty by default) through `kc`, as the controller
 * would (with no owner: the tests that use it hold no Node of that name); resolves with the object.
 */
export async function createNodeModules(
  kc: KubeConfig,
  name: string,
  spec: NodeModules['spec'] = {},
): Promise<NodeModules> {
  return (await kc.makeApiClient(CustomObjectsApi).createClusterCustomObject({
    ...crd(NODE_MODULES_PLURAL),
    body: { apiVersion: API_VERSION, kind: 'NodeModules', metadata: { name }, spec },
  })) as NodeModules;
}

/** A node's NodeModules, or undefined. */
export async function getNodeModules(kc: KubeConfig, node: string): Promise<NodeModules | undefined> {
  try {
    return (await kc
      .makeApiClient(CustomObjectsApi)
      .getClusterCustomObject({ ...crd(NODE_MODULES_PLURAL), name: node })) as NodeModules;
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** One request on one node, as its node's NodeModules holds it: the spec entry and its result there. */
export interface NodeRun {
  nodeName: string;
  entry: NodeModulesRequest;
  result?: NodeModulesResult;
}

/**
 * Writes `fields` as the node's result for `run`'s request, replacing the node's status, as an
 * agent's credentials could (tests that act as the agent, or as a rogue one).
 */
export async function writeNodeResult(
  kc: KubeConfig,
  run: NodeRun,
  fields: Omit<NodeModulesResult, 'name' | 'uid' | 'observedGeneration'>,
): Promise<void> {
  const result: NodeModulesResult = {
    name: run.entry.name,
    uid: run.entry.uid,
    observedGeneration: run.entry.generation,
    ...fields,
  };
  await kc.makeApiClient(CustomObjectsApi).patchClusterCustomObjectStatus(
    {
      ...crd(NODE_MODULES_PLURAL),
      name: run.nodeName,
      body: [{ op: 'add', path: '/status', value: { results: [result] } }],
    },
    setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
  );
}

/** Every (node, request) of every node's NodeModules: what the agents are asked to run and what they reported. */
export async function listRuns(kc: KubeConfig): Promise<NodeRun[]> {
  return (await listNodeModules(kc)).flatMap((nm) => {
    const results = new Map((nm.status?.results ?? []).map((r) => [r.uid, r]));
    return (nm.spec.requests ?? []).map((entry) => {
      const result = results.get(entry.uid);
      return { nodeName: nm.metadata.name ?? '', entry, ...(result ? { result } : {}) };
    });
  });
}

/** Waits until the request's condition `type` has `status` for its current generation; returns the request. */
export function waitForCondition(
  kc: KubeConfig,
  name: string,
  type: string,
  status = 'True',
  timeoutMs = 20_000,
): Promise<ModuleRequest> {
  return eventually(
    `${name} to have ${type}=${status}`,
    async () => {
      const r = await getRequest(kc, name);
      const c = r?.status?.conditions?.find((x) => x.type === type);
      return r &&
        c?.status === status &&
        c.observedGeneration === r.metadata.generation &&
        r.status?.observedGeneration === r.metadata.generation
        ? r
        : undefined;
    },
    timeoutMs,
  );
}

/** Waits until the request's status.phase is `phase` (e.g. Running: its helper has been claimed). */
export function waitForPhase(
  kc: KubeConfig,
  name: string,
  phase: string,
  timeoutMs = 20_000,
): Promise<ModuleRequest> {
  return eventually(
    `${name} to be ${phase}`,
    async () => {
      const r = await getRequest(kc, name);
      return r?.status?.phase === phase ? r : undefined;
    },
    timeoutMs,
  );
}
