/**
 * The real-kernel tier: modules loaded for real, into Debian's kernel in a
 * QEMU VM that is a Node of the suite's cluster. Everything else in the test
 * suites ends in `modprobe --dry-run` or in a recorder (this machine's own
 * kernel must never change); here the agent's helper calls finit_module() and
 * every scenario reads the truth back from inside the guest kernel
 * (/proc/modules, /sys/module, /sys/class/net, boot_id, tainted) through the
 * guest's command channel, not only from our own status.
 *
 * The cluster: a control plane, the node on this machine (support/node.ts,
 * with the demo tree whose every module runs a recorder instead of loading),
 * and the VM node (support/vm.ts, vmnode.ts), its kubelet and containerd
 * inside the guest. The chart is installed as users install it, so the VM's
 * agent is a DaemonSet pod with the chart's securityContext, RuntimeDefault
 * seccomp profile and hostPath mounts. The controller stays on this machine's
 * node (controller.nodeSelector): under TCG it would run ~20x slower.
 *
 * One DaemonSet has one hostPath per volume for every node: the chart's
 * agent.modulesHostPath and modprobeConfHostPath name the demo tree on this
 * machine (which must never see a real /lib/modules), and the VM's node
 * script bind-mounts the guest's own /lib/modules and /etc/modprobe.d at
 * those same paths before its kubelet starts, on every boot.
 *
 * Two boots: the first without module signature enforcement, the second, a
 * reboot from inside the guest, with module.sig_enforce=1.
 *
 * Run by `make e2e` (test/e2e/run.sh) after e2e.test.ts; not part of `make test`.
 */
import { after, afterEach, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api, KubeConfig, type CoreV1Event } from '@kubernetes/client-node';
import { mergePatch } from '../../src/kube/callopts.ts';
import { ensureBinaries, type ControlPlane } from '../../src/cluster/controlplane.ts';
import type { ModuleRequest, ModuleRequestSpec, NodeResult } from '../../src/api/types.ts';
import { createRequest, deleteRequest, getRequest } from '../support/objects.ts';
import { recordResults } from '../support/results.ts';
import { e2eImages, helmBinary, toolRunner } from './support/artefacts.ts';
import { startControlPlaneForNodes, startNode, type RealNode } from './support/node.ts';
import { isReady, kubectlReport, listPods, waitWithDiagnosis } from './support/waiting.ts';
import {
  agentTreeValues,
  assertNothingLoads,
  prepareE2eModules,
  type E2eModules,
} from './support/modules.ts';
import { createVm, vmImages, type VirtualMachine, type VmImages } from './support/vm.ts';
import { importImages, startVmNode, type VmNode } from './support/vmnode.ts';

const root = resolve(import.meta.dirname, '../..');
const HOST_NODE = 'e2e-node';
const VM_NODE = 'e2e-vm';
/** The VM node's label: what a selector request for "the real-kernel nodes" names. */
const VM_LABEL = { 'kmod-e2e/kernel': 'debian-vm' };
const NS = 'kmod-system';
const RELEASE = 'kmod-operator';
const PREFIX = 'kmod-vm';
const SIG_ENFORCE = 'module.sig_enforce=1';
const nodeIp = process.env.KMOD_E2E_NODE_IP ?? '';
const podSubnet = process.env.KMOD_E2E_POD_SUBNET ?? '';
const vmLink = process.env.KMOD_E2E_VM_LINK ?? '';
const vmAddress = process.env.KMOD_E2E_VM_IP ?? '';
const vmPodSubnet = process.env.KMOD_E2E_VM_POD_SUBNET ?? '';
const work = mkdtempSync(join(tmpdir(), 'kmod-e2e-vm-test-'));
// Interrupted (Ctrl-C, a CI timeout): exit through 'exit', where the VM, node and control plane clean up.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

/** Generous: everything on the VM node runs under TCG, on a machine shared with other builds. */
const LONG = 600_000;

let cp: ControlPlane;
let kc: KubeConfig;
let hostNode: RealNode | undefined;
let vm: VirtualMachine | undefined;
let vmNode: VmNode;
let images: VmImages;
let tree: E2eModules;
let binDir: string;
let helmBin: string;
/** The tier's figures, recorded as section `realKernel` of the e2e results file when the file ends. */
const figures = {
  kernel: { package: '', version: '', release: '' },
  boots: [] as Array<{
    kernelArgs: string[];
    /** QEMU started → the guest's command channel answers. */
    secondsToGuest: number;
    /** The guest's containerd importing the project and pause images (first boot only). */
    secondsImport?: number;
    /** The kubelet started (first boot) or the guest answering (reboot) → Node Ready with the boot's ID. */
    secondsToNodeReady: number;
  }>,
  scenarios: [] as Array<{ name: string; seconds: number; passed: boolean }>,
};
const fileStarted = performance.now();
/** Where `make e2e` records its figures (test/support/results.ts; E2E_RESULTS=path elsewhere). */
const E2E_RESULTS = process.env.E2E_RESULTS || join(root, 'test/e2e/results.json');
/** Seconds with one decimal. */
const round = (seconds: number) => Math.round(seconds * 10) / 10;
/** Requests a test created; deleted after it, so a reboot re-runs only what a test leaves standing. */
const created: string[] = [];

const sh = toolRunner({ cwd: root, kubeconfig: () => cp.kubeconfigPath, helmHome: join(work, 'helm') });
const kubectl = (...args: string[]) => sh(join(binDir, 'kubectl'), args);

/** The guest's answer to a script (throws on a non-zero exit). */
const inGuest = (script: string) => vm!.guest.sh(script);

/** What the cluster and the VM say, for a failure message. */
async function diagnose(): Promise<string> {
  const run = (args: string[]) => kubectlReport(join(binDir, 'kubectl'), cp.kubeconfigPath, args);
  const guestLog = vm
    ? await vm.guest
        .run('tail -n 15 /var/log/kmod-e2e/kubelet.log; dmesg | tail -n 15', 30_000)
        .then((r) => r.output)
        .catch((e: Error) => e.message)
    : '';
  return [
    run(['get', 'nodes,pods,modulerequests', '-A', '-o', 'wide']),
    run(['get', 'events', '-A', '--sort-by=.lastTimestamp']),
    // Each node's requests and results as its agent reported them, and what the agents logged.
    run(['get', 'nodemodules', '-o', 'yaml']),
    run(['logs', '-n', NS, '-l', 'app.kubernetes.io/component=agent', '--prefix', '--tail=40']),
    `guest kubelet log and kernel log:\n${guestLog}`,
  ].join('\n');
}

/** eventually(), with the cluster's and the guest's state in the failure message. */
const waitFor = waitWithDiagnosis(diagnose, LONG, 1000);

const pods = (selector: string) => listPods(kc, NS, selector);
const ready = isReady;
const agentOn = async (node: string) =>
  (await pods('app.kubernetes.io/component=agent')).find((p) => ready(p) && p.spec?.nodeName === node);

async function request(name: string, spec: ModuleRequestSpec): Promise<void> {
  await createRequest(kc, name, spec);
  created.push(name);
}

/** Waits until the request is `phase` for its current generation. */
async function settled(name: string, phase: 'Succeeded' | 'Failed'): Promise<ModuleRequest> {
  return waitFor(`ModuleRequest ${name} ${phase}`, async () => {
    const r = await getRequest(kc, name);
    return r?.status?.phase === phase && r.status.observedGeneration === r.metadata.generation
      ? r
      : undefined;
  });
}

function resultOn(r: ModuleRequest, node: string): NodeResult {
  const n = r.status?.nodes?.find((x) => x.nodeName === node);
  assert.ok(n, `${r.metadata.name} has no result for ${node}: ${JSON.stringify(r.status)}`);
  return n;
}

/** The guest kernel's loaded modules, in /proc/modules order (the most recently loaded first), with their users. */
async function guestModules(): Promise<Array<{ name: string; usedBy: string[] }>> {
  return (await inGuest('cat /proc/modules'))
    .trim()
    .split('\n')
    .map((l) => l.split(' '))
    .map(([name, , , usedBy]) => ({
      name: name!,
      usedBy: usedBy === '-' || !usedBy ? [] : usedBy.split(',').filter(Boolean),
    }));
}
const guestHas = async (path: string) => (await vm!.guest.run(`test -e '${path}'`)).status === 0;
const guestBootId = async () => (await inGuest('cat /proc/sys/kernel/random/boot_id')).trim();
const guestTainted = async () => Number((await inGuest('cat /proc/sys/kernel/tainted')).trim());
/** The kernel's taint bits (Documentation/admin-guide/tainted-kernels.rst). */
const TAINT_OOT_MODULE = 1 << 12; // O: an out-of-tree module was loaded
const TAINT_UNSIGNED_MODULE = 1 << 13; // E: an unsigned module was loaded

/** Values for this cluster: the local image, the suite's API server, the demo tree, a slow node's probes. */
function values(image: string): string {
  const at = image.lastIndexOf(':');
  const file = join(work, 'values.json');
  writeFileSync(
    file,
    JSON.stringify({
      namePrefix: PREFIX,
      image: { repository: image.slice(0, at), tag: image.slice(at + 1), pullPolicy: 'Never' },
      apiServer: { host: nodeIp, port: new URL(cp.server).port },
      // One controller, on this machine's node.
      controller: { replicas: 1, nodeSelector: { 'kubernetes.io/hostname': HOST_NODE } },
      // Removal is off by default: the removal scenarios name the modules they remove.
      modulePolicy: { allowRemove: '^(dummy|libcrc32c|crc32c_(generic|intel)|vrf|ext4|nlmon)$' },
      agent: {
        ...agentTreeValues(tree),
        // Node runs ~20x slower under TCG: time to start, and time to answer a probe.
        startupSeconds: 600,
        probeTimeoutSeconds: 10,
      },
    }),
  ); // JSON is YAML
  return file;
}

before(async () => {
  assert.ok(
    nodeIp && podSubnet && vmLink && vmAddress && vmPodSubnet,
    'run the e2e suite with `make e2e` (test/e2e/run.sh gives it a network namespace of its own)',
  );
  binDir = ensureBinaries();
  helmBin = helmBinary(root);
  // Both cached by run.sh already: these only read the names.
  const built = e2eImages(root);
  const [imageArchive, imageName] = [built.operator.archive, built.operator.name];
  const [pauseArchive, pauseName] = [built.pause.archive, built.pause.name];
  images = vmImages(root);
  figures.kernel = {
    package: `linux-image-${images.release}`,
    version: images.version,
    release: images.release,
  };

  tree = prepareE2eModules(join(work, 'node-modules'));
  assertNothingLoads(tree);

  // The VM boots and imports the images (the longest step) while the control plane and the node
  // on this machine start.
  const guestIp = vmAddress.split('/')[0]!;
  const vmImported = (async () => {
    vm = createVm({
      images,
      name: VM_NODE,
      address: vmAddress,
      tap: { name: 'kmod-vm0', hostAddress: vmLink, routes: [{ dst: vmPodSubnet, via: guestIp }] },
      disks: [pauseArchive, imageArchive],
    });
    const boot = await vm.boot();
    return { boot, importSeconds: await importImages(vm, pauseName) };
  })();
  // Not awaited until the control plane is up: a boot failure must not go unhandled meanwhile.
  vmImported.catch(() => undefined);

  cp = await startControlPlaneForNodes(nodeIp, [HOST_NODE, VM_NODE]);
  kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  hostNode = await startNode({
    cp,
    binDir,
    name: HOST_NODE,
    nodeIp,
    podSubnet,
    imageArchives: [pauseArchive, imageArchive],
    pauseImage: pauseName,
  });
  const { boot, importSeconds } = await vmImported;
  vmNode = await startVmNode({
    cp,
    vm: vm!,
    nodeIp: guestIp,
    podSubnet: vmPodSubnet,
    labels: VM_LABEL,
    paths: [
      { path: tree.modulesDir, bindFrom: '/lib/modules' },
      { path: tree.modprobeDir, bindFrom: '/etc/modprobe.d' },
      { path: tree.recordsDir },
    ],
  });
  figures.boots.push({
    kernelArgs: [],
    secondsToGuest: round(boot.seconds),
    secondsImport: round(importSeconds),
    secondsToNodeReady: round(vmNode.readySeconds),
  });
  console.log(`VM node: ${JSON.stringify(figures.boots[0])}`);

  sh(helmBin, [
    'install',
    RELEASE,
    'charts/kmod-operator',
    '-n',
    NS,
    '--create-namespace',
    '-f',
    values(imageName),
  ]);
  await waitFor('the controller Ready on this machine’s node', async () =>
    (await pods('app.kubernetes.io/component=controller')).find(
      (p) => ready(p) && p.spec?.nodeName === HOST_NODE,
    ),
  );
  await waitFor('an agent Ready on each node', async () =>
    (await agentOn(HOST_NODE)) && (await agentOn(VM_NODE)) ? true : undefined,
  );
});

let testStarted = 0;
beforeEach(() => {
  testStarted = Date.now();
});
afterEach(async (t) => {
  figures.scenarios.push({
    name: t.name,
    seconds: round((Date.now() - testStarted) / 1000),
    // TestContext.passed (Node ≥ 21.7) is not in this @types/node yet.
    passed: Reflect.get(t, 'passed') === true,
  });
  for (const name of created.splice(0)) await deleteRequest(kc, name).catch(() => undefined);
});

after(async () => {
  if (figures.boots.length > 0) {
    recordResults(E2E_RESULTS, 'realKernel', {
      ...figures,
      fileSeconds: round((performance.now() - fileStarted) / 1000),
      includes:
        'test/e2e/vm.test.ts: the VM booted twice (the second with module.sig_enforce=1), its Node Ready, every scenario',
    });
  }
  await vm?.stop();
  await hostNode?.stop();
  await cp?.stop();
  rmSync(work, { recursive: true, force: true });
});

test('the VM node runs Debian’s kernel, and its agent is the chart’s DaemonSet pod with the chart’s restrictions', async () => {
  const core = kc.makeApiClient(CoreV1Api);
  const n = await core.readNode({ name: VM_NODE });
  assert.equal(n.status?.nodeInfo?.kernelVersion, images.release);
  assert.equal(n.status?.nodeInfo?.bootID, await guestBootId());
  assert.equal((await inGuest('uname -r')).trim(), images.release);
  const agent = await agentOn(VM_NODE);
  assert.ok(agent);
  const c = agent.spec?.containers.find((x) => x.name === 'agent');
  assert.deepEqual(c?.securityContext?.capabilities?.add, ['SYS_MODULE', 'SETPCAP', 'SYSLOG']);
  assert.equal(c?.securityContext?.seccompProfile?.type, 'RuntimeDefault');
  // The agent process as the guest kernel sees it: containerd's seccomp filter on it (mode 2),
  // exactly CAP_SYS_MODULE (16), CAP_SETPCAP (8) and CAP_SYSLOG (34, to read the kernel log for a
  // refused load's reason) effective, no_new_privs, and the guest's
  // own /lib/modules mounted (its release's directory).
  const status = await inGuest(
    'pid=$(pgrep -f "kmod-operator.mjs agent" | head -1); grep -E "^(Seccomp|CapEff|NoNewPrivs):" /proc/$pid/status; ls /proc/$pid/root/lib/modules',
  );
  assert.match(status, /^Seccomp:\s+2$/m);
  assert.match(status, /^CapEff:\s+0000000400010100$/m);
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.match(status, new RegExp(`^${images.release.replace(/\./g, '\\.')}$`, 'm'));
});

test('1. a plain load: dummy is Succeeded, and the guest kernel has /sys/module/dummy and dummy0', async () => {
  assert.equal(await guestHas('/sys/module/dummy'), false, 'dummy is not loaded before');
  await request('vm-dummy', { module: 'dummy', nodeName: VM_NODE });
  const r = resultOn(await settled('vm-dummy', 'Succeeded'), VM_NODE);
  assert.equal(r.exitCode, 0);
  assert.equal(r.bootID, await guestBootId(), 'the result names the guest’s boot');
  assert.ok(await guestHas('/sys/module/dummy'));
  assert.ok(await guestHas('/sys/class/net/dummy0'));
  assert.ok((await guestModules()).some((m) => m.name === 'dummy'));
});

test('2. parameters reach the kernel: brd rd_nr=3 rd_size=4096 gives three RAM disks of 4 MiB', async () => {
  assert.equal(await guestHas('/sys/module/brd'), false, 'brd is not loaded before');
  await request('vm-brd', { module: 'brd', parameters: ['rd_nr=3', 'rd_size=4096'], nodeName: VM_NODE });
  assert.equal(resultOn(await settled('vm-brd', 'Succeeded'), VM_NODE).exitCode, 0);
  assert.equal((await inGuest('cat /sys/module/brd/parameters/rd_nr')).trim(), '3');
  assert.equal((await inGuest('cat /sys/module/brd/parameters/rd_size')).trim(), '4096');
  assert.deepEqual((await inGuest('ls /sys/block | grep ^ram')).trim().split('\n'), ['ram0', 'ram1', 'ram2']);
  // 4096 KiB each, in 512-byte sectors.
  assert.equal((await inGuest('cat /sys/block/ram2/size')).trim(), '8192');
});

test('3. a dependency chain: every module of status.resolved for xfs is loaded, dependencies first', async () => {
  const before = new Set((await guestModules()).map((m) => m.name));
  assert.equal(before.has('xfs'), false, 'xfs is not loaded before');
  await request('vm-xfs', { module: 'xfs', nodeName: VM_NODE });
  const r = resultOn(await settled('vm-xfs', 'Succeeded'), VM_NODE);
  const resolved = r.resolved ?? [];
  assert.ok(resolved.includes('libcrc32c') && resolved.at(-1) === 'xfs', `resolved: ${resolved.join(', ')}`);
  const loaded = await guestModules();
  const builtin = (await inGuest(`cat /lib/modules/${images.release}/modules.builtin`))
    .split('\n')
    .map((l) => l.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_'));
  for (const m of resolved) {
    assert.ok(
      loaded.some((x) => x.name === m) || builtin.includes(m),
      `${m} (of ${resolved.join(', ')}) is neither in /proc/modules nor built in`,
    );
  }
  // /proc/modules lists the most recently loaded first: the modules this request loaded appear in
  // the reverse of the resolved (load) order, and the kernel records xfs as libcrc32c's user.
  const fresh = resolved.filter((m) => !before.has(m) && loaded.some((x) => x.name === m));
  const order = loaded.map((x) => x.name).filter((m) => fresh.includes(m));
  assert.deepEqual(order, [...fresh].reverse(), `/proc/modules order: ${order.join(', ')}`);
  assert.ok(loaded.find((x) => x.name === 'libcrc32c')?.usedBy.includes('xfs'));
});

test('4. already loaded: a second request for dummy succeeds without a second load', async () => {
  // The interface dummy0 is created by dummy's init: a second load (after an unload) would make
  // a new dummy0 with a new ifindex; the kernel's /proc/modules line would be new too.
  const ifindex = (await inGuest('cat /sys/class/net/dummy0/ifindex')).trim();
  const line = (await inGuest('grep "^dummy " /proc/modules')).trim();
  await request('vm-dummy-again', { module: 'dummy', nodeName: VM_NODE });
  const r = resultOn(await settled('vm-dummy-again', 'Succeeded'), VM_NODE);
  assert.equal(r.exitCode, 0);
  assert.equal((await inGuest('cat /sys/class/net/dummy0/ifindex')).trim(), ifindex);
  assert.equal((await inGuest('grep "^dummy " /proc/modules')).trim(), line);
  assert.equal((await inGuest('ls -d /sys/class/net/dummy*')).trim().split('\n').length, 1);
});

test('verified load: an install line that only pretends (install macvlan /bin/true) exits 0 and ends NotLoaded, naming macvlan', async () => {
  // The guest's /etc/modprobe.d is the agent's modprobe configuration (bind-mounted at the
  // chart's modprobeConfHostPath): an install line there replaces the load of macvlan by
  // /bin/true, which exits 0 and loads nothing. modprobe says 0; the kernel says otherwise.
  const conf = '/etc/modprobe.d/kmod-e2e-pretend.conf';
  assert.equal(await guestHas('/sys/module/macvlan'), false, 'macvlan is not loaded before');
  await inGuest(`echo 'install macvlan /bin/true' > ${conf}`);
  try {
    await request('vm-pretend', { module: 'macvlan', nodeName: VM_NODE });
    const r = resultOn(await settled('vm-pretend', 'Failed'), VM_NODE);
    assert.equal(r.exitCode, 0, 'modprobe (through the install command) exited 0');
    assert.equal(r.reason, 'NotLoaded');
    assert.match(r.message ?? '', /exited 0, but macvlan is not in the kernel/);
    assert.match(r.message ?? '', /install command/);
    assert.equal(await guestHas('/sys/module/macvlan'), false, 'and the guest kernel agrees');
  } finally {
    await inGuest(`rm -f ${conf}`);
  }
  // Without the line the same module loads, and the per-node result lists what the kernel shows.
  await request('vm-macvlan', { module: 'macvlan', nodeName: VM_NODE });
  const ok = resultOn(await settled('vm-macvlan', 'Succeeded'), VM_NODE);
  assert.ok(ok.verified?.includes('macvlan'), JSON.stringify(ok));
  assert.ok(await guestHas('/sys/module/macvlan'));
});

test('removal: dummy loaded, then removed (spec.action Remove); /sys/module/dummy and dummy0 are gone', async () => {
  assert.ok(await guestHas('/sys/module/dummy'), 'dummy is loaded (scenario 1)');
  await request('vm-dummy-remove', { module: 'dummy', action: 'Remove', nodeName: VM_NODE });
  const r = resultOn(await settled('vm-dummy-remove', 'Succeeded'), VM_NODE);
  assert.equal(r.reason, 'Removed', JSON.stringify(r));
  assert.equal(r.exitCode, 0);
  assert.equal(await guestHas('/sys/module/dummy'), false, 'gone from the guest kernel');
  assert.equal(await guestHas('/sys/class/net/dummy0'), false, 'and its interface with it');
  assert.ok(!(await guestModules()).some((m) => m.name === 'dummy'));
});

test('removal refused by the kernel: libcrc32c while xfs uses it ends InUse, and both stay loaded', async () => {
  const holders = (await guestModules()).find((m) => m.name === 'libcrc32c')?.usedBy ?? [];
  assert.ok(holders.includes('xfs'), 'xfs holds libcrc32c (scenario 3)');
  await request('vm-libcrc32c-remove', { module: 'libcrc32c', action: 'Remove', nodeName: VM_NODE });
  const r = resultOn(await settled('vm-libcrc32c-remove', 'Failed'), VM_NODE);
  assert.equal(r.reason, 'InUse', JSON.stringify(r));
  assert.notEqual(r.exitCode, 0);
  // The guest's own netfilter modules (the CNI's) hold libcrc32c too: the message names every holder.
  assert.match(
    r.message ?? '',
    /libcrc32c is in use \(used by [^;)]*\bxfs\b[^;)]*; refcnt \d+\); nothing was removed/,
  );
  assert.ok(await guestHas('/sys/module/libcrc32c'));
  assert.ok(await guestHas('/sys/module/xfs'));
  assert.ok((await guestModules()).find((m) => m.name === 'libcrc32c')?.usedBy.includes('xfs'));
});

test('removals the kernel will not do, or need not: vrf ([permanent]) ends Permanent, ext4 (built in) BuiltIn, nlmon (not loaded) AlreadyRemoved', async () => {
  // vrf has an init function and no exit function: the kernel marks it [permanent] and refuses
  // delete_module (EBUSY). It stays loaded for the rest of this boot; no other scenario uses it.
  await request('vm-vrf', { module: 'vrf', nodeName: VM_NODE });
  assert.equal(resultOn(await settled('vm-vrf', 'Succeeded'), VM_NODE).exitCode, 0);
  assert.match(await inGuest('grep "^vrf " /proc/modules'), /\[permanent\]/);
  await request('vm-vrf-remove', { module: 'vrf', action: 'Remove', nodeName: VM_NODE });
  const permanent = resultOn(await settled('vm-vrf-remove', 'Failed'), VM_NODE);
  assert.equal(permanent.reason, 'Permanent', JSON.stringify(permanent));
  assert.match(permanent.message ?? '', /vrf has no exit function \(\[permanent\]\)/);
  assert.ok(await guestHas('/sys/module/vrf'), 'vrf is still loaded');

  // ext4 is built into the cloud kernel (the guest's root file system): modprobe -r refuses it.
  assert.match(await inGuest('grep -c "/ext4.ko$" /lib/modules/$(uname -r)/modules.builtin'), /^1/);
  await request('vm-ext4-remove', { module: 'ext4', action: 'Remove', nodeName: VM_NODE });
  const builtIn = resultOn(await settled('vm-ext4-remove', 'Failed'), VM_NODE);
  assert.equal(builtIn.reason, 'BuiltIn', JSON.stringify(builtIn));
  assert.match(builtIn.message ?? '', /ext4 is built into the kernel and cannot be removed/);

  // nlmon is not loaded in this boot (7b loads it after the reboot): nothing to remove, and said so.
  assert.equal(await guestHas('/sys/module/nlmon'), false);
  await request('vm-nlmon-remove', { module: 'nlmon', action: 'Remove', nodeName: VM_NODE });
  const already = resultOn(await settled('vm-nlmon-remove', 'Succeeded'), VM_NODE);
  assert.equal(already.reason, 'AlreadyRemoved', JSON.stringify(already));
  assert.equal(already.exitCode, 0);
  assert.equal(await guestHas('/sys/module/nlmon'), false);
});

test('5. the kernel refuses a parameter value: loop max_loop=abc fails and nothing is loaded', async () => {
  assert.equal(await guestHas('/sys/module/loop'), false, 'loop is not loaded before');
  await request('vm-loop-bad', { module: 'loop', parameters: ['max_loop=abc'], nodeName: VM_NODE });
  const r = resultOn(await settled('vm-loop-bad', 'Failed'), VM_NODE);
  assert.equal(r.exitCode, 1, 'modprobe’s exit code');
  assert.equal(await guestHas('/sys/module/loop'), false);
  // The kernel's own reason is in the guest's kernel log...
  assert.match(await inGuest('dmesg'), /loop: `abc' invalid for parameter `max_loop'/);
  // ...and in the request's status: the refused call's errno and the kernel's line, in the
  // fields and in the message a person reads.
  assert.equal(r.reason, 'ExitCode');
  assert.equal(r.errno, 'EINVAL');
  assert.match(r.kernelLog ?? '', /loop: `abc' invalid for parameter `max_loop'/);
  assert.match(r.message ?? '', /finit_module of loop failed: Invalid argument \(EINVAL\)/);
  assert.match(r.message ?? '', /kernel: .*invalid for parameter `max_loop'/);
});

test('6. the capability boundary is real: without CAP_SYS_MODULE in the helper’s mask the load fails and nothing loads; with the default mask it loads', async () => {
  // The agent config ConfigMap is one for the whole cluster (every agent reads it): narrowing it
  // narrows the helper on both nodes. Only the VM node is asked to load meanwhile; the masks are
  // restored and the agents restarted afterwards (a narrowed mask cannot widen while an agent runs).
  const core = kc.makeApiClient(CoreV1Api);
  const config = `${PREFIX}-agent-config`;
  assert.equal(await guestHas('/sys/module/ifb'), false, 'ifb is not loaded before');
  const narrowedEvents = async () =>
    (await core.listEventForAllNamespaces({ fieldSelector: 'reason=CapabilityNarrowed' })).items.filter(
      (e: CoreV1Event) => e.involvedObject.name === VM_NODE,
    );
  const already = (await narrowedEvents()).length;
  await core.patchNamespacedConfigMap(
    { name: config, namespace: NS, body: { data: { capabilityBounding: '' } } },
    mergePatch(),
  );
  try {
    await waitFor('the VM node’s agent to narrow the helper’s bounding set', async () =>
      (await narrowedEvents()).length > already ? true : undefined,
    );
    await request('vm-ifb-narrowed', { module: 'ifb', nodeName: VM_NODE });
    const r = resultOn(await settled('vm-ifb-narrowed', 'Failed'), VM_NODE);
    assert.equal(r.exitCode, 1, 'modprobe’s exit code');
    assert.equal(await guestHas('/sys/module/ifb'), false, 'nothing loaded');
    assert.equal(await guestHas('/sys/class/net/ifb0'), false);
    assert.equal(r.reason, 'ExitCode');
    assert.equal(r.errno, 'EPERM', 'the kernel refused finit_module itself');
    assert.match(r.message ?? '', /finit_module of ifb failed: Operation not permitted \(EPERM\)/);
  } finally {
    await core.patchNamespacedConfigMap(
      { name: config, namespace: NS, body: { data: { capabilityBounding: 'cap_sys_module' } } },
      mergePatch(),
    );
    const old = (await pods('app.kubernetes.io/component=agent')).map((p) => p.metadata!.uid);
    kubectl('-n', NS, 'delete', 'pods', '-l', 'app.kubernetes.io/component=agent', '--wait=false');
    await waitFor('new agents Ready on both nodes', async () => {
      const fresh = (await pods('app.kubernetes.io/component=agent')).filter(
        (p) => ready(p) && !old.includes(p.metadata!.uid),
      );
      return fresh.some((p) => p.spec?.nodeName === VM_NODE) &&
        fresh.some((p) => p.spec?.nodeName === HOST_NODE)
        ? true
        : undefined;
    });
  }
  await request('vm-ifb', { module: 'ifb', nodeName: VM_NODE });
  assert.equal(resultOn(await settled('vm-ifb', 'Succeeded'), VM_NODE).exitCode, 0);
  assert.ok(await guestHas('/sys/module/ifb'));
  assert.ok(await guestHas('/sys/class/net/ifb0'));
});

test('7a. without module.sig_enforce an unsigned out-of-tree module loads, and taints the kernel', async () => {
  const unsigned = images.unsigned;
  assert.equal((await inGuest('cat /sys/module/module/parameters/sig_enforce')).trim(), 'N');
  assert.equal((await guestTainted()) & TAINT_UNSIGNED_MODULE, 0, 'no unsigned module before');
  await request('vm-unsigned', { module: unsigned, nodeName: VM_NODE });
  assert.equal(resultOn(await settled('vm-unsigned', 'Succeeded'), VM_NODE).exitCode, 0);
  assert.ok(await guestHas(`/sys/module/${unsigned}`));
  const tainted = await guestTainted();
  assert.equal(tainted & TAINT_UNSIGNED_MODULE, TAINT_UNSIGNED_MODULE, `tainted = ${tainted}: E`);
  assert.equal(tainted & TAINT_OOT_MODULE, TAINT_OOT_MODULE, `tainted = ${tainted}: O`);
  assert.equal((await inGuest(`cat /sys/module/${unsigned}/taint`)).trim(), 'OE');
  assert.match(await inGuest('dmesg'), new RegExp(`${unsigned}: loaded`));
});

test('9. a selector request spanning both nodes: one result per node, each from its own kernel', async () => {
  assert.equal(await guestHas('/sys/module/vxlan'), false, 'vxlan is not loaded before');
  await request('vm-both', { module: 'vxlan', nodeSelector: {} });
  // The request is Failed as soon as one node failed; wait for both nodes' own results.
  const r = await waitFor('a final result of vm-both on each node', async () => {
    const x = await settled('vm-both', 'Failed');
    const done = (x.status?.nodes ?? []).filter((n) => n.phase === 'Succeeded' || n.phase === 'Failed');
    return done.length === 2 ? x : undefined;
  });
  assert.equal(r.status?.nodes?.length, 2, JSON.stringify(r.status?.nodes));
  // The VM's kernel has vxlan: it is loaded there, with its dependencies, in the guest's boot.
  const onVm = resultOn(r, VM_NODE);
  assert.equal(onVm.phase, 'Succeeded');
  assert.equal(onVm.bootID, await guestBootId());
  assert.deepEqual(onVm.resolved?.at(-1), 'vxlan');
  const loaded = (await guestModules()).map((m) => m.name);
  for (const m of onVm.resolved ?? []) assert.ok(loaded.includes(m), `${m} loaded in the guest`);
  // This machine's node has only the demo tree for its own kernel release: modprobe there finds no
  // vxlan, and says so naming that release; nothing ran.
  const onHost = resultOn(r, HOST_NODE);
  assert.equal(onHost.phase, 'Failed');
  assert.equal(onHost.reason, 'ResolveFailed');
  assert.match(
    onHost.message ?? '',
    new RegExp(`Module vxlan not found in directory /lib/modules/${release()}`),
  );
  assert.equal(onHost.exitCode, undefined);
});

test('8. reboot: a standing selector request is loaded again after the VM reboots, under the new boot ID', async () => {
  // zram num_devices=2: loaded, with its dependency zsmalloc, and two /dev/zram devices.
  assert.equal(await guestHas('/sys/module/zram'), false, 'zram is not loaded before');
  await createRequest(kc, 'vm-standing', {
    module: 'zram',
    parameters: ['num_devices=2'],
    nodeSelector: VM_LABEL,
  });
  const first = resultOn(await settled('vm-standing', 'Succeeded'), VM_NODE);
  const oldBoot = await guestBootId();
  assert.equal(first.bootID, oldBoot);
  assert.ok(await guestHas('/dev/zram1'));

  // The second boot enforces module signatures (scenario 7b below); Debian signed zram.
  const t0 = Date.now();
  const boot = await vm!.reboot([SIG_ENFORCE]);
  assert.notEqual(boot.bootId, oldBoot);
  assert.ok(boot.cmdline.includes(SIG_ENFORCE), boot.cmdline);
  // The guest's boot script starts containerd and the kubelet again; the kubelet reports the boot.
  await vmNode.waitReady(boot.bootId);
  figures.boots.push({
    kernelArgs: [SIG_ENFORCE],
    secondsToGuest: round(boot.seconds),
    secondsToNodeReady: round((Date.now() - t0) / 1000),
  });
  const after = await waitFor('vm-standing Succeeded again under the new boot ID', async () => {
    const r = await getRequest(kc, 'vm-standing');
    const n = r?.status?.nodes?.find((x) => x.nodeName === VM_NODE);
    return n?.phase === 'Succeeded' && n.bootID === boot.bootId ? n : undefined;
  });
  assert.equal(after.exitCode, 0);
  assert.ok(await guestHas('/sys/module/zram'), 'zram is loaded in the new boot');
  assert.ok(await guestHas('/dev/zram1'), 'with its parameter');
  assert.equal(await guestBootId(), boot.bootId);
  created.push('vm-standing');
});

test('7b. with module.sig_enforce=1 a Debian-signed module loads and the unsigned one is refused', async () => {
  const unsigned = images.unsigned;
  assert.equal((await inGuest('cat /sys/module/module/parameters/sig_enforce')).trim(), 'Y');
  await request('vm-signed-enforced', { module: 'nlmon', nodeName: VM_NODE });
  assert.equal(resultOn(await settled('vm-signed-enforced', 'Succeeded'), VM_NODE).exitCode, 0);
  assert.ok(await guestHas('/sys/module/nlmon'));
  await request('vm-unsigned-enforced', { module: unsigned, nodeName: VM_NODE });
  const r = resultOn(await settled('vm-unsigned-enforced', 'Failed'), VM_NODE);
  assert.equal(r.exitCode, 1, 'modprobe’s exit code');
  assert.equal(await guestHas(`/sys/module/${unsigned}`), false);
  assert.equal((await guestTainted()) & TAINT_UNSIGNED_MODULE, 0, 'the kernel is not tainted');
  assert.equal(r.reason, 'ExitCode');
  assert.equal(r.errno, 'EKEYREJECTED');
  assert.match(r.message ?? '', /Key was rejected by service \(EKEYREJECTED\)/);
  // The kernel's own line (kernel/module/signing.c) names no module: it is kept by its errno.
  assert.match(r.kernelLog ?? '', /Loading of unsigned module is rejected/);
});

test('the VM stops with nothing left behind: no QEMU process, no TAP device, no temp files', async () => {
  const v = vm!;
  await v.stop();
  assert.deepEqual(v.leftovers(), []);
  vm = undefined;
  const n = hostNode!;
  await n.stop();
  assert.deepEqual(n.leftovers(), []);
  hostNode = undefined;
});
