/**
 * A real Kubernetes node on this machine for the end-to-end suite: Debian's
 * containerd (with runc and the CNI loopback plugin) and the kubelet built
 * from the same pinned module as the control plane.
 *
 * Everything lives under one temp dir: containerd's root, state, socket and
 * runc root, the kubelet's root dir, certs and pod logs. Nothing is pulled:
 * images come from docker-archives (`ctr images import`), the sandbox image
 * too. What this machine needs, found the hard way (see issue 8):
 * - cgroup v1 (hybrid): `failCgroupV1: false`, `cgroupDriver: cgroupfs`;
 *   `failSwapOn: false`.
 * - root here lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj:
 *   containerd's CRI `restrict_oom_score_adj = true`.
 * - the kubelet refuses a loopback node IP ("nodeIP can't be loopback
 *   address": the Node then has no InternalIP and hostNetwork pods no IP), and
 *   this machine allows traffic only on loopback or inside network namespaces
 *   the test created. So the suite runs inside a network namespace of its own
 *   (test/e2e/run.sh): the node's address is a dummy interface there, pods get
 *   a bridge network (Debian's CNI bridge + host-local plugins) inside it, and
 *   everything, netdevs included, vanishes with the namespace.
 *
 * `stop()` kills the kubelet for sure (SIGKILL: it may ignore SIGTERM),
 * kills and deletes every container and sandbox, stops containerd and its
 * shims, unmounts whatever the kubelet and containerd mounted under the temp
 * dir, and removes it; `leftovers()` reports what would still be there.
 * Killing the sandboxes bypasses the CRI, whose StopPodSandbox is what
 * unmounts a pod's network namespace: so containerd keeps them under its own
 * state dir (`netns_mounts_under_state_dir`, nodeconfig.ts), never in the
 * machine-wide /run/netns, and stop() releases exactly those its sandboxes
 * had (read from containerd before it stops).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  freePort,
  kubeconfigYaml,
  startControlPlane,
  type ControlPlane,
} from '../../../src/cluster/controlplane.ts';
import { cniConfig, containerdConfig, kubeletArgs, kubeletConfig } from './nodeconfig.ts';

const tempPrefix = 'kmod-e2e-node-';

/**
 * A control plane for real kubelets: on `address` (the suite's node address), with the
 * scheduler, the controllers that run DaemonSets and Deployments, the Node authorizer, and a
 * token for `system:node:<name>` of each node.
 */
export function startControlPlaneForNodes(address: string, nodeNames: string[]): Promise<ControlPlane> {
  return startControlPlane({
    address,
    scheduler: true,
    authorizationModes: ['Node', 'RBAC'],
    extraControllers: ['daemonset', 'deployment', 'replicaset', 'root-ca-cert-publisher', 'nodelifecycle'],
    extraUsers: nodeNames.map((n) => ({ user: `system:node:${n}`, groups: ['system:nodes'] })),
    apiServerFlags: ['--kubelet-preferred-address-types=InternalIP'],
    readyTimeoutMs: 120_000,
  });
}

/** How a node is started. */
export interface NodeOptions {
  /** The control plane the kubelet registers with; it must have a token for `system:node:<name>`. */
  cp: ControlPlane;
  /** Directory with the kubelet binary (test/cluster/build.sh). */
  binDir: string;
  /** The Node's name. */
  name: string;
  /** The node's InternalIP (and the kubelet's bind address): an address of a local, non-loopback interface. */
  nodeIp: string;
  /** The pod subnet (CIDR) of this node's CNI bridge. */
  podSubnet: string;
  /** docker-archives to import into containerd's k8s.io namespace before the kubelet starts. */
  imageArchives: string[];
  /** The pod sandbox image (already among `imageArchives`). */
  pauseImage: string;
  /** Labels the kubelet registers the node with. */
  labels?: Record<string, string>;
  /** How long to wait for the node to become Ready, in ms. Default 120 s. */
  readyTimeoutMs?: number;
}

/** A running node. */
export interface RealNode {
  readonly name: string;
  readonly dir: string;
  /** containerd's socket (for `ctr --address`). */
  readonly containerdSocket: string;
  /** The kubelet's podLogsDir: <namespace>_<pod>_<uid>/<container>/<n>.log */
  readonly podLogsDir: string;
  /** Runs `ctr -n k8s.io` against this node's containerd; returns stdout. */
  ctr(args: string[]): string;
  /** Stops everything and removes the temp dir (idempotent). */
  stop(): Promise<void>;
  /** What the node left behind after stop(): processes, mounts, cgroups, its pods' netns (empty = clean). */
  leftovers(): string[];
}

interface Proc {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: Promise<void>;
}

function start(dir: string, name: string, bin: string, args: string[]): Proc {
  const logPath = join(dir, `${name}.log`);
  const fd = openSync(logPath, 'a');
  // setpriv --pdeathsig: the kernel kills the child if the test process dies.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', bin, ...args], {
    cwd: dir,
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  closeSync(fd);
  const exited = new Promise<void>((res) => {
    child.on('exit', () => res());
    child.on('error', () => res());
  });
  return { name, child, logPath, exited };
}

function alive(p: Proc): boolean {
  return p.child.exitCode === null && p.child.signalCode === null;
}

async function kill(p: Proc, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!alive(p) || p.child.pid === undefined) return;
  try {
    process.kill(-p.child.pid, signal);
  } catch {
    return;
  }
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), graceMs).unref());
  if ((await Promise.race([p.exited, timer])) === 'timeout') {
    try {
      process.kill(-p.child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await p.exited;
  }
}

function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    // mountinfo escapes spaces etc. as octal; our paths have none.
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** PIDs whose command line mentions `needle` (our temp dir or socket). */
export function processesMentioning(needle: string): Array<{ pid: number; cmd: string }> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      if (cmd.includes(needle)) found.push({ pid: Number(entry), cmd });
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

function unmountAll(dir: string): void {
  // Repeat: unmounting a parent can reveal nothing new, but bind mounts may be stacked.
  for (let round = 0; round < 5; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return;
    for (const p of points) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
  }
}

/** Kills and deletes every container runc knows under this node's runc root (synchronous). */
function killContainers(dir: string): void {
  const root = join(dir, 'runc', 'k8s.io');
  if (!existsSync(root)) return;
  const list = () =>
    spawnSync('runc', ['--root', root, 'list', '-q'], { encoding: 'utf8' })
      .stdout.split('\n')
      .filter(Boolean);
  for (const id of list())
    spawnSync('runc', ['--root', root, 'kill', '--all', id, 'KILL'], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    const ids = list();
    if (ids.length === 0) return;
    for (const id of ids) spawnSync('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    spawnSync('sleep', ['0.1']);
  }
}

/**
 * The network namespace of a pod sandbox, from `ctr containers info`'s JSON: the CRI
 * plugin's sandbox container (label io.cri-containerd.kind=sandbox) joins the netns
 * the plugin bind-mounted for the pod (a `cni-<uuid>` file); undefined for a
 * hostNetwork pod or any other container.
 */
export function sandboxNetnsPath(info: unknown): string | undefined {
  const c = info as {
    Labels?: Record<string, string>;
    Spec?: { linux?: { namespaces?: Array<{ type?: string; path?: string }> } };
  } | null;
  if (c?.Labels?.['io.cri-containerd.kind'] !== 'sandbox') return undefined;
  const path = c.Spec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  return path || undefined;
}

/** The netns paths of the pod sandboxes the containerd on `sock` knows (synchronous; none if it does not answer). */
function sandboxNetns(sock: string): string[] {
  const ctr = (args: string[]) =>
    spawnSync('ctr', ['--address', sock, '-n', 'k8s.io', ...args], { encoding: 'utf8', timeout: 30_000 });
  const ids = ctr(['containers', 'ls', '-q']).stdout?.split('\n').filter(Boolean) ?? [];
  const paths: string[] = [];
  for (const id of ids) {
    const r = ctr(['containers', 'info', id]);
    if (r.status !== 0) continue;
    try {
      const path = sandboxNetnsPath(JSON.parse(r.stdout));
      if (path) paths.push(path);
    } catch {
      /* removed meanwhile, or not JSON */
    }
  }
  return paths;
}

/** Whether `path` is still a mount point (a netns bind mount) in this mount namespace. */
function isMountPoint(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
}

/**
 * Unmounts and removes the netns bind mounts at `paths` (what containerd's CRI plugin does on
 * StopPodSandbox, which a node killed under its pods never gets). Only paths this node's
 * containerd reported: other runs on this machine may have theirs beside them.
 */
function releaseNetns(paths: Iterable<string>): void {
  for (const p of paths) {
    if (isMountPoint(p)) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
    if (!isMountPoint(p)) rmSync(p, { force: true });
  }
}

/** The mounted cgroup hierarchies (v1 controllers and the unified one). */
function cgroupHierarchies(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - cgroup2? /.test(l))
    .map((l) => l.split(' ')[4]!)
    .filter(Boolean);
}

/** Removes cgroup dirs (children first); a cgroup still holding a process stays, and is reported by leftovers(). */
function removeCgroups(dirs: string[]): void {
  for (const top of dirs) {
    if (!existsSync(top)) continue;
    const sub = readdirSync(top, { recursive: true, withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(e.parentPath, e.name))
      .sort((a, b) => b.length - a.length);
    for (const d of [...sub, top]) spawnSync('rmdir', [d], { stdio: 'ignore' });
  }
}

/**
 * Starts containerd and a kubelet for node `opts.name`, imports the images,
 * and waits until the Node is Ready. On failure everything started is torn
 * down and the error carries the failing component's log tail.
 */
export async function startNode(opts: NodeOptions): Promise<RealNode> {
  const dir = mkdtempSync(join(tmpdir(), tempPrefix));
  const nodeIp = opts.nodeIp;
  const sock = join(dir, 'containerd.sock');
  const podLogsDir = join(dir, 'pod-logs');
  const procs: Proc[] = [];
  // containerd puts the containers' cgroups under <hierarchy>/k8s.io (the namespace's name):
  // those this node creates go again on stop.
  const newCgroups = cgroupHierarchies()
    .map((h) => join(h, 'k8s.io'))
    .filter((d) => !existsSync(d));
  for (const d of ['cni', 'containerd', 'runc', 'kubelet', podLogsDir])
    mkdirSync(join(dir, d), { recursive: true });

  const ctr = (args: string[]) =>
    execFileSync('ctr', ['--address', sock, '-n', 'k8s.io', ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  // The network namespaces of this node's pod sandboxes, as containerd's CRI plugin named them
  // (read before containerd stops): leftovers() reports any that still exist. Only these are
  // ours: other test runs on this machine have theirs.
  const netns = new Set<string>();
  const recordNetns = () => {
    for (const p of sandboxNetns(sock)) netns.add(p);
  };

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const kubelet = procs.find((p) => p.name === 'kubelet');
    // The kubelet may ignore SIGTERM while it syncs pods: kill it outright.
    if (kubelet) await kill(kubelet, 'SIGKILL', 5000);
    recordNetns();
    // Containers (sandboxes included) outlive the kubelet and containerd in their shims: kill
    // them with runc itself (it needs no daemon), then stop containerd.
    killContainers(dir);
    const containerd = procs.find((p) => p.name === 'containerd');
    if (containerd) await kill(containerd, 'SIGTERM', 5000);
    // Shims are started with `-address <our socket>`; anything still mentioning our dir goes.
    for (const p of processesMentioning(dir)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (let i = 0; i < 50 && processesMentioning(dir).length > 0; i++) await sleep(100);
    releaseNetns(netns);
    unmountAll(dir);
    removeCgroups(newCgroups);
    process.removeListener('exit', onExit);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  };
  // Synchronous, for process exit (an interrupted run): same order, no waiting on promises.
  const onExit = () => {
    for (const p of procs)
      if (p.child.pid && alive(p) && p.name === 'kubelet') spawnSync('kill', ['-KILL', `-${p.child.pid}`]);
    recordNetns();
    killContainers(dir);
    for (const p of procs) if (p.child.pid && alive(p)) spawnSync('kill', ['-KILL', `-${p.child.pid}`]);
    for (const p of processesMentioning(dir)) spawnSync('kill', ['-KILL', String(p.pid)]);
    spawnSync('sleep', ['0.5']);
    releaseNetns(netns);
    unmountAll(dir);
    removeCgroups(newCgroups);
    if (mountsUnder(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const fail = async (p: Proc, what: string): Promise<never> => {
    const log = tail(p.logPath);
    await stop();
    throw new Error(`${what}; last lines of ${p.name}'s log:\n${log}`);
  };

  try {
    // --- containerd ---------------------------------------------------------
    const paths = {
      root: join(dir, 'containerd/root'),
      state: join(dir, 'containerd/state'),
      socket: sock,
      opt: join(dir, 'containerd/opt'),
      runcRoot: join(dir, 'runc'),
      cniConfDir: join(dir, 'cni'),
    };
    writeFileSync(join(dir, 'containerd.toml'), containerdConfig(paths, opts.pauseImage));
    writeFileSync(join(dir, 'cni', '10-kmod-e2e.conflist'), cniConfig(opts.podSubnet, join(dir, 'cni-ipam')));
    const containerd = start(dir, 'containerd', 'containerd', ['--config', join(dir, 'containerd.toml')]);
    procs.push(containerd);
    for (let i = 0; ; i++) {
      if (!alive(containerd)) await fail(containerd, 'containerd exited during start-up');
      if (
        existsSync(sock) &&
        spawnSync('ctr', ['--address', sock, 'version'], { stdio: 'ignore' }).status === 0
      )
        break;
      if (i > 300) await fail(containerd, 'containerd did not answer on its socket within 30 s');
      await sleep(100);
    }
    for (const archive of opts.imageArchives) {
      const r = spawnSync(
        'ctr',
        ['--address', sock, '-n', 'k8s.io', 'images', 'import', '--no-unpack', archive],
        {
          encoding: 'utf8',
        },
      );
      if (r.status !== 0) await fail(containerd, `ctr images import ${archive} failed: ${r.stderr}`);
    }

    // --- kubelet ------------------------------------------------------------
    const token = opts.cp.tokens.get(`system:node:${opts.name}`);
    if (!token) throw new Error(`the control plane has no token for system:node:${opts.name} (extraUsers)`);
    const kubeconfig = join(dir, 'kubelet.kubeconfig');
    writeFileSync(kubeconfig, kubeconfigYaml(opts.cp.server, opts.cp.caPem, token, opts.name), {
      mode: 0o600,
    });
    const [port, healthzPort] = [await freePort(), await freePort()];
    writeFileSync(
      join(dir, 'kubelet.yaml'),
      kubeletConfig({ address: nodeIp, port, healthzPort, containerdSocket: sock, podLogsDir }),
    );
    const kubelet = start(
      dir,
      'kubelet',
      join(opts.binDir, 'kubelet'),
      kubeletArgs({
        config: join(dir, 'kubelet.yaml'),
        kubeconfig,
        rootDir: join(dir, 'kubelet'),
        name: opts.name,
        nodeIp,
        labels: opts.labels,
      }),
    );
    procs.push(kubelet);

    const deadline = Date.now() + (opts.readyTimeoutMs ?? 120_000);
    for (;;) {
      if (!alive(kubelet)) await fail(kubelet, 'the kubelet exited during start-up');
      if (!alive(containerd)) await fail(containerd, 'containerd exited during start-up');
      const r = spawnSync(
        join(opts.binDir, 'kubectl'),
        [
          '--kubeconfig',
          opts.cp.kubeconfigPath,
          'get',
          'node',
          opts.name,
          '-o',
          'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        ],
        { encoding: 'utf8' },
      );
      if (r.stdout.trim() === 'True') break;
      if (Date.now() > deadline)
        await fail(kubelet, `node ${opts.name} not Ready within ${opts.readyTimeoutMs ?? 120_000} ms`);
      await sleep(500);
    }

    return {
      name: opts.name,
      dir,
      containerdSocket: sock,
      podLogsDir,
      ctr,
      stop,
      leftovers: () => [
        ...processesMentioning(dir).map((p) => `process ${p.pid}: ${p.cmd}`),
        ...mountsUnder(dir).map((m) => `mount ${m}`),
        ...newCgroups.filter((d) => existsSync(d)).map((d) => `cgroup ${d}`),
        ...[...netns].filter((p) => existsSync(p) || isMountPoint(p)).map((p) => `netns ${p}`),
        ...(existsSync(dir) ? [`dir ${dir}`] : []),
      ],
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
