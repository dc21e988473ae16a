/**
 * The operator as users run it: the image built from the project's
 * Dockerfile, on a real node (containerd + kubelet), installed with
 * `helm install` of charts/kmod-operator as the README says, then upgraded
 * and uninstalled. Every scenario is asserted from real objects and real
 * processes. Run by `make e2e` (test/e2e/run.sh), which builds the images and
 * starts this file inside a network namespace of its own; not part of
 * `make test`.
 *
 * The machine's kernel is never changed: the node's modprobe.d has an
 * `install` line for every module of the demo tree that runs a recorder
 * instead (checked with modprobe itself before anything starts). modprobe
 * runs those lines and exits 0, and the agent, checking the kernel after the
 * load, finds nothing loaded: every load on this node ends Failed with reason
 * NotLoaded (what a user of an `install` line that only pretends would see),
 * after the helper ran to its end. The VM node loads for real.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { jsonPatch, mergePatch } from '../../src/kube/callopts.ts';
import { ensureBinaries, type ControlPlane } from '../../src/cluster/controlplane.ts';
import { GROUP, REQUEST_PLURAL, VERSION, type ModuleRequest } from '../../src/api/types.ts';
import { eventually } from '../support/cluster.ts';
import { admissionRefusal } from '../support/objects.ts';
import { recordResults } from '../support/results.ts';
import { e2eImages, helmBinary, toolRunner } from './support/artefacts.ts';
import { startControlPlaneForNodes, startNode, type RealNode } from './support/node.ts';
import { isReady, kubectlReport, listPods, waitWithDiagnosis } from './support/waiting.ts';
import {
  agentTreeValues,
  assertNothingLoads,
  prepareE2eModules,
  readRecords,
  RECORD_MOUNT,
  type E2eModules,
} from './support/modules.ts';

const root = resolve(import.meta.dirname, '../..');
const NODE = 'e2e-node';
const OTHER_NODE = 'e2e-other';
const NS = 'kmod-system';
const RELEASE = 'kmod-operator';
/**
 * The chart's object names (namePrefix) in this suite: not deploy/'s `kmod`, so the chart's
 * prefix is exercised on a real node, and deploy/'s objects are new names after `helm uninstall`.
 */
const HELM_PREFIX = 'kmod-helm';
const nodeIp = process.env.KMOD_E2E_NODE_IP ?? '';
const podSubnet = process.env.KMOD_E2E_POD_SUBNET ?? '';
const work = mkdtempSync(join(tmpdir(), 'kmod-e2e-'));
// Interrupted (Ctrl-C, a CI timeout): exit through 'exit', where the node and control plane clean up.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

let cp: ControlPlane;
let node: RealNode | undefined;
let kc: KubeConfig;
let tree: E2eModules;
let binDir: string;
let helmBin: string;
let image: { name: string; archive: string; size: number };

const LONG = 180_000;
/** Where `make e2e` records its figures (test/support/results.ts; E2E_RESULTS=path elsewhere). */
const E2E_RESULTS = process.env.E2E_RESULTS || join(root, 'test/e2e/results.json');

const sh = toolRunner({ cwd: root, kubeconfig: () => cp.kubeconfigPath, helmHome: join(work, 'helm') });
const kubectl = (...args: string[]) => sh(join(binDir, 'kubectl'), args);
const helm = (...args: string[]) => sh(helmBin, args);

/** Values for this machine: the locally built image, the API server of this network namespace, the demo tree. */
function e2eValues(extra: Record<string, unknown> = {}): string {
  const [repository, tag] = [
    image.name.slice(0, image.name.lastIndexOf(':')),
    image.name.slice(image.name.lastIndexOf(':') + 1),
  ];
  const port = new URL(cp.server).port;
  const values = {
    namePrefix: HELM_PREFIX,
    image: { repository, tag, pullPolicy: 'Never' },
    apiServer: { host: nodeIp, port },
    agent: {
      ...agentTreeValues(tree),
      // One helper at a time, and a long wait for a slot: scenario 5 keeps a run waiting behind a running one.
      maxConcurrent: 1,
      busyTimeoutSeconds: 300,
      ...extra,
    },
  };
  const file = join(work, `values-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(values, null, 2)); // JSON is YAML
  return file;
}

/** What the cluster and the node say, for a failure message: objects, events, the kubelet's last errors. */
function diagnose(): string {
  const run = (args: string[]) => kubectlReport(join(binDir, 'kubectl'), cp.kubeconfigPath, args);
  const kubeletErrors = node
    ? readFileSync(join(node.dir, 'kubelet.log'), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('E') && !/filesystem info|HasDedicatedImageFs|oom score/.test(l))
        .slice(-15)
        .join('\n')
    : '';
  return [
    run(['get', 'deploy,rs,ds,pods', '-A', '-o', 'wide']),
    run(['get', 'events', '-A', '--sort-by=.lastTimestamp']),
    `kubelet errors:\n${kubeletErrors}`,
  ].join('\n');
}

/** eventually(), with the cluster's state in the failure message. */
const waitFor = waitWithDiagnosis(diagnose, LONG, 500);

const pods = (selector: string) => listPods(kc, NS, selector);
const ready = isReady;

async function getRequest(name: string): Promise<ModuleRequest> {
  const api = kc.makeApiClient(CustomObjectsApi);
  return (await api.getClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    name,
  })) as ModuleRequest;
}
async function createRequest(name: string, spec: Record<string, unknown>): Promise<void> {
  const api = kc.makeApiClient(CustomObjectsApi);
  await api.createClusterCustomObject({
    group: GROUP,
    version: VERSION,
    plural: REQUEST_PLURAL,
    body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'ModuleRequest', metadata: { name }, spec },
  });
}
/**
 * A load on this node: the helper ran the install lines to their end (exit 0), and the agent,
 * checking the kernel, found the module missing (NotLoaded, naming it).
 */
async function waitNotLoaded(name: string, module: string): Promise<ModuleRequest> {
  const r = await waitPhase(name, 'Failed');
  const n = r.status?.nodes?.[0];
  assert.equal(n?.reason, 'NotLoaded', n?.message);
  assert.equal(n?.exitCode, 0);
  assert.deepEqual(n?.verified, []);
  assert.match(
    n?.message ?? '',
    new RegExp(
      `exited 0, but ${module} is not in the kernel \\(the node loads it through an install command`,
    ),
  );
  return r;
}

async function waitPhase(name: string, phase: string, timeoutMs = LONG): Promise<ModuleRequest> {
  return waitFor(
    `ModuleRequest ${name} phase ${phase}`,
    async () => {
      const r = await getRequest(name);
      return r.status?.phase === phase && r.status.observedGeneration === r.metadata?.generation
        ? r
        : undefined;
    },
    timeoutMs,
  );
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = request(url, { timeout: 5000 }, (resp) => {
      let body = '';
      resp.setEncoding('utf8');
      resp.on('data', (c: string) => (body += c));
      resp.on('end', () => res({ status: resp.statusCode ?? 0, body }));
    });
    req.on('error', rej);
    req.on('timeout', () => req.destroy(new Error(`timeout on ${url}`)));
    req.end();
  });
}

/** The container's log lines as the kubelet wrote them (CRI format: time stream tag message). */
function containerLog(pod: V1Pod, container: string): string[] {
  const dir = join(node!.podLogsDir, `${NS}_${pod.metadata!.name}_${pod.metadata!.uid}`, container);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.log'))
    .flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n'))
    .filter(Boolean)
    .map((l) => l.split(' ').slice(3).join(' '));
}

before(async () => {
  assert.ok(
    nodeIp && podSubnet,
    'run the e2e suite with `make e2e` (test/e2e/run.sh gives it a network namespace of its own)',
  );
  binDir = ensureBinaries();
  helmBin = helmBinary(root);
  // Cached by run.sh already: this only reads the archive names (and rebuilds if the sources changed).
  const images = e2eImages(root);
  image = images.operator;
  const [pauseArchive, pauseName] = [images.pause.archive, images.pause.name];
  const imageArchive = image.archive;

  tree = prepareE2eModules(join(work, 'node-modules'));
  assertNothingLoads(tree);

  cp = await startControlPlaneForNodes(nodeIp, [NODE]);
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  const nodeStart = performance.now();
  node = await startNode({
    cp,
    binDir,
    name: NODE,
    nodeIp,
    podSubnet,
    imageArchives: [pauseArchive, imageArchive],
    pauseImage: pauseName,
  });
  // The README's e2e figures come from this file (test/support/results.ts).
  recordResults(E2E_RESULTS, 'node', {
    readySeconds: +((performance.now() - nodeStart) / 1000).toFixed(1),
    includes: 'the kubelet, containerd and the image import, until the Node is Ready',
  });
});

after(async () => {
  await node?.stop();
  await cp?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('the node is Ready, with its InternalIP, and runs the image built from the Dockerfile', async () => {
  const core = kc.makeApiClient(CoreV1Api);
  const n = await core.readNode({ name: NODE });
  assert.equal(n.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  assert.deepEqual(
    n.status?.addresses?.filter((a) => a.type === 'InternalIP').map((a) => a.address),
    [nodeIp],
  );
  const images = node!.ctr(['images', 'ls', '-q']);
  assert.match(images, new RegExp(image.name.replace(/[.:/]/g, '\\$&')));
  console.log(`operator image ${image.name}: ${(image.size / 1e6).toFixed(0)} MB`);
});

test('helm install, as the README says: controller (2 replicas, one leader) and agent become Ready', async () => {
  const installStart = performance.now();
  helm('install', RELEASE, 'charts/kmod-operator', '-n', NS, '--create-namespace', '-f', e2eValues());
  const controllers = await waitFor('two Ready controller pods', async () => {
    const ps = (await pods('app.kubernetes.io/component=controller')).filter(ready);
    return ps.length === 2 ? ps : undefined;
  });
  const agent = await waitFor('a Ready agent pod on the node', async () =>
    (await pods('app.kubernetes.io/component=agent')).find((p) => ready(p) && p.spec?.nodeName === NODE),
  );
  recordResults(E2E_RESULTS, 'helmInstall', {
    podsReadySeconds: +((performance.now() - installStart) / 1000).toFixed(1),
    includes: 'helm install until both controller pods and the agent pod are Ready (first use of the image)',
  });
  // One leader: the Lease names one of the two controller pods.
  const leases = await kc.makeApiClient(CoordinationV1Api).listNamespacedLease({ namespace: NS });
  const names = controllers.map((p) => p.metadata!.name!);
  const holders = leases.items
    .map((l) => l.spec?.holderIdentity ?? '')
    .filter((h) => names.some((n) => h.includes(n)));
  assert.equal(holders.length, 1, `leases: ${JSON.stringify(leases.items.map((l) => l.spec))}`);

  // Logs are JSON, line by line, from the real containers.
  for (const [p, c] of [...controllers.map((p) => [p, 'controller'] as const), [agent, 'agent'] as const]) {
    const lines = await eventually(`log lines of ${p.metadata!.name}`, () => {
      const l = containerLog(p, c);
      return l.length > 0 ? l : undefined;
    });
    for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not JSON: ${l}`);
  }

  // /metrics answers on the pods' own addresses.
  for (const p of controllers) {
    const m = await httpGet(`http://${p.status!.podIP}:8080/metrics`);
    assert.equal(m.status, 200);
    assert.match(m.body, /^# HELP /m);
  }
  const am = await httpGet(`http://${agent.status!.podIP}:8081/metrics`);
  assert.equal(am.status, 200);
  assert.match(am.body, /kmod_agent_/);
});

test('a request for all nodes runs through the agent pod; the real modprobe followed the dependency; the agent verifies: NotLoaded', async () => {
  const before = new Set(readRecords(tree).map((r) => r.dir));
  await createRequest('e2e-all', { module: 'demo_net', nodeSelector: {} });
  const r = await waitNotLoaded('e2e-all', 'demo_core');
  assert.equal(r.status?.nodes?.length, 1);
  assert.deepEqual(r.status?.nodes?.[0]?.resolved, ['demo_core', 'demo_net']);
  // modprobe ran the install command for the dependency first, then for the module.
  const fresh = readRecords(tree).filter((x) => !before.has(x.dir));
  assert.deepEqual(
    fresh.map((x) => x.module),
    ['demo_core', 'demo_net'],
  );
});

test('a missing module fails before exec with modprobe’s own words: the agent resolved it first', async () => {
  await createRequest('e2e-missing', { module: 'demo_missing', nodeName: NODE });
  const r = await waitPhase('e2e-missing', 'Failed');
  const n = r.status?.nodes?.[0];
  // The agent asks the pod's modprobe what the request would load before exec (the policy judges
  // that set): a module that resolves to nothing fails there, with modprobe's message, and no
  // helper runs: there is no exit status.
  assert.equal(n?.reason, 'ResolveFailed');
  assert.match(n?.message ?? '', /modprobe: FATAL: Module demo_missing not found in directory/);
  assert.equal(n?.exitCode, undefined);
});

test('the helper the agent started in the pod runs with the kernel’s restrictions (read from its own /proc)', () => {
  const rec = readRecords(tree).find((x) => x.module === 'demo_net');
  assert.ok(rec, 'the recorder ran for demo_net');
  for (const [who, status] of [
    ['modprobe', rec.helperStatus],
    ['its install command', rec.selfStatus],
  ] as const) {
    assert.equal(status.get('CapBnd'), '0000000000010000', `${who}: bounding set = CAP_SYS_MODULE only`);
    assert.equal(status.get('CapInh'), '0000000000000000', `${who}: inheritable set empty`);
    assert.equal(status.get('CapAmb'), '0000000000000000', `${who}: no ambient capabilities`);
    assert.equal(status.get('NoNewPrivs'), '1', `${who}: no_new_privs`);
  }
  assert.deepEqual(rec.helperCmdline, ['/sbin/modprobe', '-q', '--', 'demo_net']);
  assert.deepEqual([...rec.helperEnviron].sort(), [
    'HOME=/',
    'PATH=/sbin:/usr/sbin:/bin:/usr/bin',
    'TERM=linux',
  ]);
  assert.equal(rec.helperNice, 0);
  // Default signal dispositions: the agent (Node.js) ignores SIGPIPE, and a helper that inherited
  // that would show bit 13. What modprobe shows while its install command runs is exactly what
  // glibc's system() sets for the wait (SIGINT and SIGQUIT ignored, SIGCHLD blocked), nothing more.
  assert.equal(
    rec.helperStatus.get('SigIgn'),
    '0000000000000006',
    'ignored: only SIGINT+SIGQUIT, by system()',
  );
  assert.equal(rec.helperStatus.get('SigBlk'), '0000000000010000', 'blocked: only SIGCHLD, by system()');
  assert.equal(rec.helperStatus.get('SigCgt'), '0000000000000000', 'no handlers');
  assert.deepEqual(rec.helperFds, ['0', '1', '2'], 'only fds 0-2');
  // It ran under the agent's tracer (strace, for the errno of a refused module call), inside the
  // pod's RuntimeDefault seccomp profile: tracing its own child needs no capability; and strace's
  // pipe is not among its descriptors (above).
  assert.notEqual(rec.helperStatus.get('TracerPid'), '0', 'the helper ran under strace');
  assert.equal(rec.selfStatus.get('TracerPid'), '0', 'strace traces the helper, not what it starts (no -f)');
});

/** Host processes of the operator's containers: pid, the subcommand (agent or controller), PID namespace. */
function operatorProcesses(): { pid: number; command: string; ns: string }[] {
  const out: { pid: number; command: string; ns: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const at = argv.indexOf('/opt/kmod-operator/dist/bin/kmod-operator.mjs');
      if (at < 0 || argv[0] !== 'node') continue;
      out.push({
        pid: Number(entry),
        command: argv[at + 1] ?? '',
        ns: readlinkSync(`/proc/${entry}/ns/pid`),
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Every process in PID namespace `ns`: host pid, pid inside, comm, state. */
function namespaceProcesses(ns: string): { pid: number; inner: number; comm: string; state: string }[] {
  const out: { pid: number; inner: number; comm: string; state: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/pid`) !== ns) continue;
      const status = readFileSync(`/proc/${entry}/status`, 'utf8');
      const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
      out.push({
        pid: Number(entry),
        inner: Number(field('NSpid').split(/\s+/).at(-1)),
        comm: field('Name'),
        state: field('State').charAt(0),
      });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** The image's own config (docker-archive: manifest.json names the config file). */
function imageConfig(): { User?: string; Entrypoint?: string[] } {
  const manifest = JSON.parse(
    execFileSync('tar', ['-xOf', image.archive, 'manifest.json'], { encoding: 'utf8' }),
  ) as {
    Config: string;
  }[];
  const config = JSON.parse(
    execFileSync('tar', ['-xOf', image.archive, manifest[0]!.Config], { encoding: 'utf8' }),
  ) as { config: { User?: string; Entrypoint?: string[] } };
  return config.config;
}

test('the image: tini is PID 1 and reaps what an install command leaves behind; no package manager; not root by default', async () => {
  const config = imageConfig();
  assert.equal(config.User, '65532:65532', 'the image does not run as root unless the pod says so');
  assert.deepEqual(config.Entrypoint?.slice(0, 3), ['/usr/bin/tini', '--', 'node']);
  const agent = operatorProcesses().find((p) => p.command === 'agent');
  assert.ok(agent, `the agent's node process: ${JSON.stringify(operatorProcesses())}`);
  const init = namespaceProcesses(agent.ns).find((p) => p.inner === 1);
  assert.equal(init?.comm, 'tini', 'PID 1 of the agent container');
  // The controller runs as 65532 (the pod's runAsUser, as the image's USER), the agent as root.
  const uid = (pid: number) => /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  assert.equal(uid(agent.pid), '0');
  for (const c of operatorProcesses().filter((p) => p.command === 'controller'))
    assert.equal(uid(c.pid), '65532');
  // No npm, npx, corepack or yarn in the runtime image: only node.
  const root = `/proc/${agent.pid}/root`;
  assert.ok(existsSync(`${root}/usr/local/bin/node`), 'node is there');
  for (const gone of [
    'usr/local/bin/npm',
    'usr/local/bin/npx',
    'usr/local/bin/corepack',
    'usr/local/lib/node_modules',
  ])
    assert.equal(existsSync(`${root}/${gone}`), false, `/${gone} in the runtime image`);

  // Three runs whose install command backgrounds a process that outlives modprobe by a second.
  const flag = join(tree.recordsDir, 'orphan-demo_fs');
  writeFileSync(flag, '');
  try {
    for (const i of [1, 2, 3]) {
      await createRequest(`e2e-orphan-${i}`, { module: 'demo_fs', nodeName: NODE });
      // The helper's exit is reported without waiting for the orphan (strace traces the helper
      // alone, not what it starts); its install line loads nothing: NotLoaded.
      await waitNotLoaded(`e2e-orphan-${i}`, 'demo_fs');
    }
  } finally {
    unlinkSync(flag);
  }
  await waitFor('the orphans to exit', () =>
    namespaceProcesses(agent.ns).every((p) => p.comm !== 'sleep' || p.state === 'Z') ? true : undefined,
  );
  await waitFor(
    'every orphan reaped: no zombie in the agent container',
    () => (namespaceProcesses(agent.ns).every((p) => p.state !== 'Z') ? true : undefined),
    30_000,
  ).catch((err: unknown) => {
    throw new Error(`${String(err)}; in the container: ${JSON.stringify(namespaceProcesses(agent.ns))}`);
  });
});

/** The service-account token the kubelet projected into the agent pod, read from the node's disk. */
function projectedToken(pod: V1Pod): string {
  const vols = join(node!.dir, 'kubelet/pods', pod.metadata!.uid!, 'volumes/kubernetes.io~projected');
  const access = readdirSync(vols).find((d) => d.startsWith('kube-api-access-'));
  assert.ok(access, `no kube-api-access volume in ${vols}`);
  return readFileSync(join(vols, access, 'token'), 'utf8');
}

function tokenConfig(token: string): KubeConfig {
  const c = new KubeConfig();
  c.loadFromOptions({
    clusters: [{ name: 'e2e', server: cp.server, caData: Buffer.from(cp.caPem).toString('base64') }],
    users: [{ name: 'agent', token }],
    contexts: [{ name: 'e2e', cluster: 'e2e', user: 'agent' }],
    currentContext: 'e2e',
  });
  return c;
}

/** The refusal's HTTP code and message (never resolves on success: that is the assertion's job). */
async function refusal(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: number; body?: unknown };
    const body = typeof e.body === 'string' ? e.body : JSON.stringify(e.body);
    return { code: e.code ?? 0, message: body };
  }
  assert.fail('the request was allowed');
}

test('the agent pod reads the kernel log (dmesg -S, with the chart’s CAP_SYSLOG) without a complaint', async () => {
  // The runs above marked the log before their helpers and read it after: a dmesg that failed
  // (no CAP_SYSLOG under kernel.dmesg_restrict=1, or seccomp) is logged once, as a warning.
  const agent = (await pods('app.kubernetes.io/component=agent')).find(ready);
  assert.ok(agent);
  const log = containerLog(agent, 'agent');
  assert.ok(log.length > 0);
  assert.deepEqual(
    log.filter((l) => l.includes('cannot read the kernel log')),
    [],
  );
  assert.ok(
    agent.spec?.containers[0]?.securityContext?.capabilities?.add?.includes('SYSLOG'),
    'the chart adds CAP_SYSLOG',
  );
});

test('node restriction with the token the kubelet projected into the agent pod', async () => {
  const agent = (await pods('app.kubernetes.io/component=agent')).find(ready);
  assert.ok(agent);
  const token = projectedToken(agent);
  const asAgent = tokenConfig(token);
  // The token is bound to the pod and carries the node's name, as the policy needs.
  const who = JSON.parse(kubectl('auth', 'whoami', '--token', token, '-o', 'json')) as {
    status: { userInfo: { username: string; extra?: Record<string, string[]> } };
  };
  assert.equal(who.status.userInfo.username, `system:serviceaccount:${NS}:${HELM_PREFIX}-agent`);
  assert.deepEqual(who.status.userInfo.extra?.['authentication.kubernetes.io/node-name'], [NODE]);
  assert.deepEqual(who.status.userInfo.extra?.['authentication.kubernetes.io/pod-name'], [
    agent.metadata!.name,
  ]);
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNode({ body: { metadata: { name: OTHER_NODE, labels: { 'e2e/other': 'true' } } } });
  try {
    await restrictedWrites(asAgent);
  } finally {
    // The node without a kubelet would hold up the agent's rolling update (an unavailable pod).
    const runs = kc.makeApiClient(CustomObjectsApi);
    await runs
      .deleteClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: REQUEST_PLURAL,
        name: 'e2e-other',
      })
      .catch(() => undefined);
    await core.deleteNode({ name: OTHER_NODE });
  }
});

async function restrictedWrites(asAgent: KubeConfig): Promise<void> {
  await createRequest('e2e-other', { module: 'demo_fs', nodeName: OTHER_NODE });
  const admin = kc.makeApiClient(CustomObjectsApi);
  const nodeModules = { group: GROUP, version: VERSION, plural: 'nodemodules' };
  // Each node's NodeModules, once the controller has placed the request there.
  const holding = async (nodeName: string, request: string) =>
    waitFor(`${nodeName}'s NodeModules holding ${request}`, async () => {
      const nm = (await admin
        .getClusterCustomObject({ ...nodeModules, name: nodeName })
        .catch(() => undefined)) as { spec?: { requests?: Array<{ name: string }> } } | undefined;
      return nm?.spec?.requests?.some((e) => e.name === request) ? nm : undefined;
    });
  await holding(NODE, 'e2e-all');
  await holding(OTHER_NODE, 'e2e-other');
  const agentApi = asAgent.makeApiClient(CustomObjectsApi);
  // The agent writes its node's status, as its reporter does (a JSON patch; RBAC allows nothing else).
  const mark = (name: string) =>
    agentApi.patchClusterCustomObjectStatus(
      { ...nodeModules, name, body: [{ op: 'test', path: '/metadata/name', value: name }] },
      jsonPatch(),
    );
  // Its own node's NodeModules: allowed.
  await mark(NODE);
  // Another node's: refused by the node restriction.
  const r1 = await refusal(mark(OTHER_NODE));
  assert.equal(r1.code, 403, r1.message);
  assert.match(
    r1.message,
    new RegExp(`agent on node ${NODE} may not write NodeModules ${OTHER_NODE} of another node`),
  );
  // Its own Node: only the helpers-state annotations, not labels.
  const agentCore = asAgent.makeApiClient(CoreV1Api);
  const patchNode = (name: string, body: object) => agentCore.patchNode({ name, body }, mergePatch());
  await patchNode(NODE, { metadata: { annotations: { 'kmod.dev/helpers-message': 'e2e' } } });
  const r2 = await refusal(patchNode(NODE, { metadata: { labels: { 'e2e/evil': 'true' } } }));
  assert.equal(r2.code, 403, r2.message);
  assert.match(
    r2.message,
    /may change only the kmod.dev\/helpers-state and kmod.dev\/helpers-message annotations/,
  );
  const r3 = await refusal(
    patchNode(OTHER_NODE, { metadata: { annotations: { 'kmod.dev/helpers-state': 'Disabled' } } }),
  );
  assert.equal(r3.code, 403, r3.message);
  assert.match(
    r3.message,
    new RegExp(`${HELM_PREFIX}-agent may update only its own Node, not ${OTHER_NODE}`),
  );
}

test('helm upgrade rolls the agent while one run is running and one waits: the drain works, nothing is lost', async () => {
  const oldAgent = (await pods('app.kubernetes.io/component=agent')).find(ready);
  assert.ok(oldAgent);
  const hold = join(tree.recordsDir, 'hold-demo_fs');
  writeFileSync(hold, '');
  // The kubelet removes a pod's logs with the pod: keep copies of the old agent's as it goes.
  let oldAgentLog: string[] = [];
  const snapshot = setInterval(() => {
    const l = containerLog(oldAgent, 'agent');
    if (l.length >= oldAgentLog.length) oldAgentLog = l;
  }, 100);
  try {
    await createRequest('e2e-running', { module: 'demo_fs', nodeName: NODE });
    await waitFor(
      'e2e-running Running',
      async () => (await getRequest('e2e-running')).status?.phase === 'Running',
    );
    // One helper slot (agent.maxConcurrent: 1): this one waits for it.
    await createRequest('e2e-waiting', { module: 'demo_pci', nodeName: NODE });
    await waitFor(
      'e2e-waiting dispatched',
      async () => (await getRequest('e2e-waiting')).status?.counts?.total === 1,
    );
    helm(
      'upgrade',
      RELEASE,
      'charts/kmod-operator',
      '-n',
      NS,
      '--reuse-values',
      '-f',
      e2eValues({ podAnnotations: { 'e2e/revision': '2' } }),
    );
    // The old pod is terminating (SIGTERM: disable, drain the running helper)...
    await waitFor('the old agent pod terminating', async () => {
      const p = (await pods('app.kubernetes.io/component=agent')).find(
        (x) => x.metadata?.uid === oldAgent.metadata?.uid,
      );
      return !p || !!p.metadata?.deletionTimestamp;
    });
  } finally {
    // ...and its helper finishes now.
    unlinkSync(hold);
  }
  // Both ran to their end (their install lines load nothing: NotLoaded, exit 0).
  const running = await waitNotLoaded('e2e-running', 'demo_fs');
  const waiting = await waitNotLoaded('e2e-waiting', 'demo_core');
  clearInterval(snapshot);
  const newAgent = await waitFor('the new agent pod Ready', async () =>
    (await pods('app.kubernetes.io/component=agent')).find(
      (p) => ready(p) && p.metadata?.uid !== oldAgent.metadata?.uid,
    ),
  );
  assert.equal(newAgent.metadata?.annotations?.['e2e/revision'], '2');
  // Neither was interrupted (attempt 1): the running one finished in the old pod, the waiting one ran in the new.
  assert.equal(running.status?.nodes?.[0]?.attempt, 1);
  assert.equal(waiting.status?.nodes?.[0]?.attempt, 1);
  const oldLog = oldAgentLog.map((l) => JSON.parse(l) as { message: string; signal?: string });
  assert.ok(
    oldLog.some((l) => l.message === 'shutting down' && l.signal === 'SIGTERM'),
    `the old agent logged its SIGTERM shutdown:\n${oldLog.map((l) => l.message).join('\n')}`,
  );
  const startedNew = new Date(newAgent.status?.startTime ?? 0).getTime();
  assert.ok(
    new Date(waiting.status?.nodes?.[0]?.startTime ?? 0).getTime() >= startedNew - 1000,
    'the waiting run started on the new pod',
  );
});

test('helm uninstall removes everything it installed; the CRDs stay (Helm’s crds/ convention)', async () => {
  const installed = helm('get', 'manifest', RELEASE, '-n', NS);
  const kinds = [...installed.matchAll(/^kind: (\S+)$/gm)].map((m) => m[1]);
  assert.ok(kinds.length >= 10, `manifest: ${kinds.join(', ')}`);
  helm('uninstall', RELEASE, '-n', NS, '--wait');
  const selector = `app.kubernetes.io/instance=${RELEASE}`;
  const types =
    'deploy,ds,rs,pods,sa,cm,roles,rolebindings,clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings,networkpolicies';
  await waitFor('nothing of the release left', () =>
    kubectl('get', types, '-A', '-l', selector, '-o', 'name').trim() === '' ? true : undefined,
  );
  const crds = kubectl('get', 'crd', '-o', 'name');
  assert.match(crds, /modulerequests.kmod.dev/);
  assert.match(crds, /nodemodules.kmod.dev/);
});

test('kubectl apply -f crds/ -f deploy/, as the README says, with the image and this machine’s settings overridden', async () => {
  // The image under the name deploy/ uses, so the kubelet finds it and never pulls.
  const deployImage = /image: (\S+)/.exec(readFileSync(join(root, 'deploy/20-controller.yaml'), 'utf8'))?.[1];
  assert.ok(deployImage);
  node!.ctr(['images', 'tag', '--force', image.name, deployImage]);
  const out = kubectl('apply', '-f', 'crds/', '-f', 'deploy/');
  assert.match(out, /daemonset.apps\/kmod-agent created/);
  // What an edge cluster like this one needs on top (the chart's apiServer and agent.* values).
  const port = new URL(cp.server).port;
  kubectl(
    '-n',
    NS,
    'set',
    'env',
    'deploy/kmod-controller',
    'ds/kmod-agent',
    `KUBERNETES_SERVICE_HOST=${nodeIp}`,
    `KUBERNETES_SERVICE_PORT=${port}`,
  );
  kubectl(
    '-n',
    NS,
    'patch',
    'ds',
    'kmod-agent',
    '--type=strategic',
    '-p',
    JSON.stringify({
      spec: {
        template: {
          spec: {
            volumes: [
              { name: 'modules', hostPath: { path: tree.modulesDir } },
              { name: 'modprobe-etc', hostPath: { path: tree.modprobeDir } },
              // Where the demo modules' recorder writes (the chart's agent.extraVolumes above).
              { name: 'e2e-records', hostPath: { path: tree.recordsDir, type: 'Directory' } },
            ],
            containers: [{ name: 'agent', volumeMounts: [{ name: 'e2e-records', mountPath: RECORD_MOUNT }] }],
          },
        },
      },
    }),
  );
  await waitFor('two Ready controller pods from deploy/', async () => {
    const ps = (await pods('app.kubernetes.io/component=controller')).filter(
      (p) => ready(p) && p.spec?.containers[0]?.image === deployImage,
    );
    return ps.length === 2 ? ps : undefined;
  });
  await waitFor('a Ready agent pod from deploy/ with the demo tree and the recorder’s directory', async () =>
    (await pods('app.kubernetes.io/component=agent')).find(
      (p) =>
        ready(p) &&
        p.spec?.volumes?.some((v) => v.hostPath?.path === tree.modulesDir) &&
        p.spec.volumes.some((v) => v.hostPath?.path === tree.recordsDir),
    ),
  );
  // The module policy from deploy/ is in force right after the chart's was deleted (helm uninstall,
  // above). While the policy read its ConfigMap through a paramRef, kubernetes/kubernetes#133827
  // refused every request here with "no params found"; it now carries its data itself.
  await waitFor('the module policy from deploy/ to refuse dccp', async () =>
    /module dccp is denied by the module policy \(kmod-system\/kmod-module-policy, rule deny\)/.test(
      (await admissionRefusal(kc, 'dccp', NODE)) ?? '',
    ),
  );
  await createRequest('e2e-deploy', { module: 'demo_fs', nodeName: NODE });
  await waitNotLoaded('e2e-deploy', 'demo_fs');
  kubectl('delete', '-f', 'deploy/', '--wait=true');
  await waitFor('no operator pods left', async () =>
    (await pods('app.kubernetes.io/name=kmod-operator')).length === 0 ? true : undefined,
  );
});

test('helm install again after helm uninstall and kubectl delete -f deploy/: the operator and its module policy work', async () => {
  helm('install', RELEASE, 'charts/kmod-operator', '-n', NS, '--create-namespace', '-f', e2eValues());
  await waitFor(`the chart's module policy to refuse dccp again`, async () =>
    new RegExp(
      `module dccp is denied by the module policy \\(${NS}/${HELM_PREFIX}-module-policy, rule deny\\)`,
    ).test((await admissionRefusal(kc, 'dccp', NODE)) ?? ''),
  );
  assert.equal(await admissionRefusal(kc, 'demo_core', NODE), undefined, 'an allowed module is admitted');
  await waitFor('a Ready agent pod on the node', async () =>
    (await pods('app.kubernetes.io/component=agent')).find((p) => ready(p) && p.spec?.nodeName === NODE),
  );
  await createRequest('e2e-reinstall', { module: 'demo_core', nodeName: NODE });
  await waitNotLoaded('e2e-reinstall', 'demo_core');
  helm('uninstall', RELEASE, '-n', NS, '--wait');
  await waitFor('no operator pods left', async () =>
    (await pods('app.kubernetes.io/name=kmod-operator')).length === 0 ? true : undefined,
  );
});

test('the node stops with nothing left behind: processes, mounts, cgroups, its temp dir', async () => {
  const n = node!;
  await n.stop();
  assert.deepEqual(n.leftovers(), []);
  node = undefined;
});
