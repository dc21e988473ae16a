/**
 * A real, local Kubernetes control plane (etcd, kube-apiserver,
 * kube-controller-manager) for the tests and for `kmod-operator local`.
 *
 * A little over 400 lines because its flags, certificates, readiness and
 * teardown (and the restarts fault tests use) must agree with each other:
 * split, each part would have to know the others' paths and ports.
 *
 * Flags follow controller-runtime's envtest (pkg/internal/testing/controlplane):
 * loopback only, RBAC authorization, an admin identity, service-account keys
 * so that TokenRequest works. kube-controller-manager runs only the
 * controllers the operator relies on (garbage collection, namespace deletion,
 * service accounts).
 *
 * Every child is started through `setpriv --pdeathsig KILL`, so no process
 * outlives this one, even after SIGKILL; temp dirs are removed on stop, on
 * process exit, and (for a run that was SIGKILLed) by the next start.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  openSync,
  closeSync,
} from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const projectRoot = resolve(import.meta.dirname, '../..');
const tempPrefix = 'kmod-controlplane-';

/** How a control plane is started. */
export interface ControlPlaneOptions {
  /** Directory with etcd, kube-apiserver, kube-controller-manager. Default: built by test/cluster/build.sh. */
  binDir?: string;
  /** Start kube-controller-manager (GC, namespace deletion). Default true. */
  controllerManager?: boolean;
  /** How long to wait for readiness, in ms. Default 60 s. */
  readyTimeoutMs?: number;
  /** Where to write the kubeconfig. Default: inside the temp dir. */
  kubeconfigPath?: string;
  /** Extra kube-apiserver flags (`--name=value`); a flag given twice takes the last value. */
  apiServerFlags?: string[];
  /**
   * kube-controller-manager controllers to run besides the operator's
   * (e.g. `daemonset`, `deployment`, `replicaset`, `root-ca-cert-publisher`
   * for a cluster with a real kubelet).
   */
  extraControllers?: string[];
  /**
   * The kube-apiserver's bind and advertise address, in the server URL and
   * the self-signed serving certificate. Default 127.0.0.1. The end-to-end
   * suite uses an address of its own network namespace, so that pods reach
   * the API server from their pod network.
   */
  address?: string;
  /** kube-apiserver authorizers, in order. Default `['RBAC']`; a real kubelet needs `['Node', 'RBAC']`. */
  authorizationModes?: string[];
  /** Start kube-scheduler too (for a cluster with a real kubelet). Default false. */
  scheduler?: boolean;
  /** More identities for the token file: user name and groups; their tokens are in `tokens`. */
  extraUsers?: Array<{ user: string; groups: string[] }>;
}

/** A running control plane; `stop()` tears it down and removes its files. */
export interface ControlPlane {
  /** https://127.0.0.1:PORT */
  readonly server: string;
  /** Path of a kubeconfig with the admin identity (group system:masters). */
  readonly kubeconfigPath: string;
  /** The admin bearer token. */
  readonly adminToken: string;
  /** PEM of the CA that signed the serving certificate. */
  readonly caPem: string;
  /** Temp dir holding data, certs, keys and logs. */
  readonly dir: string;
  /** Bearer tokens of `extraUsers`, by user name. */
  readonly tokens: ReadonlyMap<string, string>;
  /** Path of the CA bundle that verifies the serving certificate (what `--root-ca-file` publishes). */
  readonly caPath: string;
  /**
   * Stops one component (SIGTERM, or SIGKILL with `kill`) and starts it again
   * with the same flags, ports and data dir; resolves once the API server is
   * ready again. For fault tests: clients see the outage as it happens.
   */
  restart(component: 'etcd' | 'kube-apiserver', opts?: { kill?: boolean }): Promise<void>;
  stop(): Promise<void>;
}

/** Builds (or finds cached) control-plane binaries; returns their directory. */
export function ensureBinaries(): string {
  const script = join(projectRoot, 'test/cluster/build.sh');
  try {
    return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch (err) {
    throw new Error(`building the control plane failed (${script}); see the message above`, { cause: err });
  }
}

/** Asks the kernel for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => {
        if (addr && typeof addr === 'object') resolvePort(addr.port);
        else reject(new Error('could not get a free port on 127.0.0.1'));
      });
    });
  });
}

/** Removes temp dirs of control planes whose owning process is gone (e.g. SIGKILLed test runs). */
function sweepStaleDirs(): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(tempPrefix)) continue;
    const dir = join(tmpdir(), name);
    const ownerFile = join(dir, 'owner.pid');
    let owner = 0;
    try {
      owner = Number(readFileSync(ownerFile, 'utf8'));
    } catch {
      continue; // being created right now, or not ours
    }
    if (owner > 0 && !isAlive(owner)) rmSync(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Proc {
  name: string;
  child: ChildProcess;
  logPath: string;
  exited: Promise<number | null>;
}

function tailOf(path: string, lines = 25): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function startProcess(dir: string, binDir: string, name: string, args: string[]): Proc & { args: string[] } {
  const bin = join(binDir, name);
  if (!existsSync(bin)) {
    throw new Error(`${bin} does not exist; run test/cluster/build.sh (make cluster builds it) to build it`);
  }
  const logPath = join(dir, `${name}.log`);
  const fd = openSync(logPath, 'a');
  // setpriv --pdeathsig: the kernel kills the child when we die, however we die.
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', bin, ...args], {
    cwd: dir,
    stdio: ['ignore', fd, fd],
    detached: true, // own process group, so stop() can signal the whole group
  });
  closeSync(fd);
  const exited = new Promise<number | null>((res) => {
    child.on('exit', (code, signal) => res(code ?? (signal ? 128 : null)));
    child.on('error', () => res(-1));
  });
  return { name, child, logPath, exited, args };
}

async function stopProcess(p: Proc, graceMs = 5000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const pid = p.child.pid;
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGTERM');
  } catch {
    return;
  }
  const timer = new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), graceMs).unref());
  if ((await Promise.race([p.exited, timer])) === 'timeout') {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await p.exited;
  }
}

function killNow(p: Proc): void {
  const pid = p.child.pid;
  if (pid === undefined || p.child.exitCode !== null) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

/** GETs `path` on the apiserver; resolves with the status code and body (never rejects). */
function apiGet(
  server: string,
  token: string,
  caPem: string,
  path: string,
): Promise<{ status: number; body: string }> {
  return new Promise((res) => {
    const req = request(
      `${server}${path}`,
      { ca: caPem, headers: { authorization: `Bearer ${token}` }, timeout: 2000 },
      (resp) => {
        let body = '';
        resp.setEncoding('utf8');
        resp.on('data', (c: string) => (body += c));
        resp.on('end', () => res({ status: resp.statusCode ?? 0, body }));
      },
    );
    req.on('error', (e) => res({ status: 0, body: e.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Writes a kubeconfig for `server` with a bearer token. */
export function kubeconfigYaml(server: string, caPem: string, token: string, user = 'admin'): string {
  const ca = Buffer.from(caPem).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: kmod-local',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${ca}`,
    'users:',
    `- name: ${user}`,
    '  user:',
    `    token: ${token}`,
    'contexts:',
    '- name: kmod-local',
    '  context:',
    '    cluster: kmod-local',
    `    user: ${user}`,
    'current-context: kmod-local',
    '',
  ].join('\n');
}

/**
 * Starts etcd, kube-apiserver and (by default) kube-controller-manager, waits
 * until the apiserver is ready and the `default` namespace exists, and writes
 * a kubeconfig. On any failure everything started so far is torn down and the
 * error carries the failing component's log tail.
 */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  // freePort() hands out a port from the ephemeral range, free when asked; by the time etcd or
  // kube-apiserver binds it, an outgoing connection (kube-apiserver's own to etcd, or any other
  // process's) may hold it. Rare, but after a bench of thousands of connections it happened: a
  // start that lost that race is started again on new ports.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startControlPlaneOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof Error) || !err.message.includes('address already in use'))
        throw err;
    }
  }
}

async function startControlPlaneOnce(opts: ControlPlaneOptions): Promise<ControlPlane> {
  sweepStaleDirs();
  const binDir = opts.binDir ?? ensureBinaries();
  const dir = mkdtempSync(join(tmpdir(), tempPrefix));
  writeFileSync(join(dir, 'owner.pid'), String(process.pid));
  const procs: Array<Proc & { args: string[] }> = [];
  let stopped = false;

  const onExit = () => {
    for (const p of procs) killNow(p);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const teardown = async () => {
    if (stopped) return;
    stopped = true;
    // Reverse order: controller-manager, apiserver, then etcd.
    for (const p of [...procs].reverse()) await stopProcess(p);
    process.removeListener('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
    const adminToken = randomBytes(24).toString('hex');
    const kcmToken = randomBytes(24).toString('hex');
    const schedulerToken = randomBytes(24).toString('hex');
    const tokens = new Map<string, string>();
    let tokenLines =
      `${adminToken},admin,admin-uid,"system:masters"\n` +
      `${kcmToken},system:kube-controller-manager,kcm-uid,"system:masters"\n` +
      `${schedulerToken},system:kube-scheduler,scheduler-uid,"system:masters"\n`;
    for (const [i, u] of (opts.extraUsers ?? []).entries()) {
      const token = randomBytes(24).toString('hex');
      tokens.set(u.user, token);
      tokenLines += `${token},${u.user},extra-uid-${i},"${u.groups.join(',')}"\n`;
    }
    writeFileSync(join(dir, 'tokens.csv'), tokenLines, { mode: 0o600 });
    const { privateKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    writeFileSync(join(dir, 'sa.key'), privateKey, { mode: 0o600 });

    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const etcd = startProcess(dir, binDir, 'etcd', [
      `--data-dir=${join(dir, 'etcd')}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeer}`,
      '--unsafe-no-fsync',
      '--log-level=warn',
    ]);
    procs.push(etcd);

    const address = opts.address ?? '127.0.0.1';
    const server = `https://${address}:${apiPort}`;
    const certDir = join(dir, 'certs');
    const apiserver = startProcess(dir, binDir, 'kube-apiserver', [
      `--etcd-servers=${etcdUrl}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${apiPort}`,
      `--cert-dir=${certDir}`, // the apiserver generates its own CA and serving cert here
      `--authorization-mode=${(opts.authorizationModes ?? ['RBAC']).join(',')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      `--service-account-issuer=${server}`,
      `--service-account-key-file=${join(dir, 'sa.key')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-cluster-ip-range=10.0.0.0/24',
      '--allow-privileged=true',
      '--storage-media-type=application/json',
      '--max-requests-inflight=1000',
      '--max-mutating-requests-inflight=500',
      '--v=1',
      ...(opts.apiServerFlags ?? []),
    ]);
    procs.push(apiserver);

    const crtPath = join(certDir, `apiserver.crt`);
    let caPem = '';
    /** Waits until every child runs, /readyz says 200 and the default namespace exists. */
    const waitReady = async () => {
      const deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
      for (;;) {
        for (const p of procs) {
          if (p.child.exitCode !== null || p.child.signalCode !== null) {
            throw new Error(
              `${p.name} exited during start-up (exit ${p.child.exitCode ?? p.child.signalCode}); last lines of ${p.logPath}:\n${tailOf(p.logPath)}`,
            );
          }
        }
        if (!caPem && existsSync(crtPath)) caPem = readFileSync(crtPath, 'utf8');
        if (caPem) {
          const ready = await apiGet(server, adminToken, caPem, '/readyz');
          if (ready.status === 200) {
            const ns = await apiGet(server, adminToken, caPem, '/api/v1/namespaces/default');
            if (ns.status === 200) return;
          }
        }
        if (Date.now() > deadline) {
          throw new Error(
            `kube-apiserver not ready after ${opts.readyTimeoutMs ?? 60_000} ms; last lines of ${apiserver.logPath}:\n${tailOf(apiserver.logPath)}`,
          );
        }
        await sleep(100);
      }
    };
    await waitReady();

    const kubeconfigPath = opts.kubeconfigPath ?? join(dir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(server, caPem, adminToken), { mode: 0o600 });

    if (opts.controllerManager !== false) {
      const kcmConfig = join(dir, 'kcm.kubeconfig');
      writeFileSync(kcmConfig, kubeconfigYaml(server, caPem, kcmToken, 'kcm'), { mode: 0o600 });
      procs.push(
        startProcess(dir, binDir, 'kube-controller-manager', [
          `--kubeconfig=${kcmConfig}`,
          '--leader-elect=false',
          // Only what the operator relies on; no node lifecycle (our nodes have no kubelet).
          `--controllers=${['garbagecollector', 'namespace', 'serviceaccount', 'serviceaccount-token', ...(opts.extraControllers ?? [])].join(',')}`,
          `--service-account-private-key-file=${join(dir, 'sa.key')}`,
          // Published as the kube-root-ca.crt ConfigMap that every service-account volume mounts.
          `--root-ca-file=${crtPath}`,
          '--secure-port=0',
          '--concurrent-gc-syncs=5',
          '--v=1',
        ]),
      );
    }

    if (opts.scheduler) {
      const schedConfig = join(dir, 'scheduler.kubeconfig');
      writeFileSync(schedConfig, kubeconfigYaml(server, caPem, schedulerToken, 'scheduler'), { mode: 0o600 });
      procs.push(
        startProcess(dir, binDir, 'kube-scheduler', [
          `--kubeconfig=${schedConfig}`,
          `--authentication-kubeconfig=${schedConfig}`,
          `--authorization-kubeconfig=${schedConfig}`,
          '--leader-elect=false',
          '--bind-address=127.0.0.1',
          `--secure-port=${await freePort()}`,
          '--v=1',
        ]),
      );
    }

    return {
      server,
      kubeconfigPath,
      adminToken,
      caPem,
      caPath: crtPath,
      dir,
      tokens,
      restart: async (component, how = {}) => {
        const i = procs.findIndex((p) => p.name === component);
        const old = procs[i];
        if (!old || stopped) throw new Error(`restart ${component}: not running`);
        if (how.kill) {
          killNow(old);
          await old.exited;
        } else await stopProcess(old);
        // The apiserver keeps its generated serving cert in certDir, so the CA clients trust stays valid.
        procs[i] = startProcess(dir, binDir, component, old.args);
        await waitReady();
      },
      stop: teardown,
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}
