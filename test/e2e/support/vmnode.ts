/**
 * The VM as a Kubernetes node of the suite's control plane: Debian's
 * containerd and runc and the project's kubelet, inside the guest (their
 * configuration from nodeconfig.ts, as on the node on this machine). The
 * suite imports the images attached to the VM as disks, writes the files
 * through the guest's command channel, and starts the services with the
 * guest's test/e2e/vm/node script, which the guest's boot script runs again
 * on every later boot: after a reboot the node comes back by itself.
 */
import { CoreV1Api, KubeConfig, type V1Node } from '@kubernetes/client-node';
import { kubeconfigYaml, type ControlPlane } from '../../../src/cluster/controlplane.ts';
import { eventually } from '../../support/cluster.ts';
import { cniConfig, containerdConfig, kubeletArgs, kubeletConfig } from './nodeconfig.ts';
import type { VirtualMachine } from './vm.ts';

/** A host path that the chart's hostPath volumes name, made in the guest at every boot. */
export interface GuestPath {
  path: string;
  /** Bind-mount this guest directory there; unset: an empty directory. */
  bindFrom?: string;
}

/** How the VM node is configured. */
export interface VmNodeOptions {
  cp: ControlPlane;
  vm: VirtualMachine;
  /** The guest's address (without prefix): the node's InternalIP. */
  nodeIp: string;
  /** The pod subnet of the guest's CNI bridge. */
  podSubnet: string;
  labels?: Record<string, string>;
  paths?: GuestPath[];
  /** How long to wait for the Node to be Ready, in ms. Default 600 s (TCG is slow). */
  readyTimeoutMs?: number;
}

/** The running VM node. */
export interface VmNode {
  readonly name: string;
  /** Seconds from starting the services to the Node Ready. */
  readonly readySeconds: number;
  /** Waits until the Node is Ready and reports `bootId` (after a reboot); returns the Node. */
  waitReady(bootId: string, timeoutMs?: number): Promise<V1Node>;
  /** The last lines of a guest service's log (kubelet, containerd). */
  serviceLog(service: 'kubelet' | 'containerd', lines?: number): Promise<string>;
}

// Paths in the guest.
const CFG = '/etc/kmod-e2e';
const SOCKET = '/run/containerd/containerd.sock';

/** A bash command that writes `content` to `path` (mode `mode`), whatever its bytes. */
function writeFileCommand(path: string, content: string, mode = '0644'): string {
  const b64 = Buffer.from(content).toString('base64');
  return `mkdir -p "$(dirname '${path}')" && printf '%s' '${b64}' | base64 -d > '${path}' && chmod ${mode} '${path}'`;
}

/**
 * Writes the guest's containerd configuration (its CRI's sandbox image is
 * `pauseImage`), starts containerd and imports the docker-archives attached
 * to the VM; returns the seconds it took. Needs no cluster, so it can
 * run while the control plane starts. The project image (~360 MB) is hashed
 * and unpacked by the guest: about two minutes under TCG.
 */
export async function importImages(vm: VirtualMachine, pauseImage: string): Promise<number> {
  const t0 = Date.now();
  const config = containerdConfig(
    {
      root: '/var/lib/containerd',
      state: '/run/containerd',
      socket: SOCKET,
      opt: '/var/lib/containerd/opt',
      runcRoot: '/run/containerd/runc',
      cniConfDir: `${CFG}/cni`,
    },
    pauseImage,
  );
  await vm.guest.sh(`${writeFileCommand(`${CFG}/containerd.toml`, config)}\nkmod-e2e-node import`, 900_000);
  return (Date.now() - t0) / 1000;
}

/**
 * Configures the guest as node `vm.name` (containerd configured and the images imported already:
 * importImages), starts its
 * containerd and kubelet, and waits for the Node to be Ready.
 */
export async function startVmNode(opts: VmNodeOptions): Promise<VmNode> {
  const { vm, cp } = opts;
  const guest = () => vm.guest;
  const token = cp.tokens.get(`system:node:${vm.name}`);
  if (!token) throw new Error(`the control plane has no token for system:node:${vm.name} (extraUsers)`);
  const files: Array<[string, string, string?]> = [
    // IPAM state on /run: a reboot starts with every pod address free again, as the pods are gone.
    [`${CFG}/cni/10-kmod-e2e.conflist`, cniConfig(opts.podSubnet, '/run/kmod-e2e/cni-ipam')],
    [
      `${CFG}/kubelet.yaml`,
      kubeletConfig({
        address: opts.nodeIp,
        port: 10250,
        healthzPort: 10248,
        containerdSocket: SOCKET,
        podLogsDir: '/var/log/pods',
      }),
    ],
    [`${CFG}/kubelet.kubeconfig`, kubeconfigYaml(cp.server, cp.caPem, token, vm.name), '0600'],
    [
      `${CFG}/kubelet.args`,
      `${kubeletArgs({
        config: `${CFG}/kubelet.yaml`,
        kubeconfig: `${CFG}/kubelet.kubeconfig`,
        rootDir: '/var/lib/kubelet',
        name: vm.name,
        nodeIp: opts.nodeIp,
        labels: opts.labels,
      }).join('\n')}\n`,
    ],
    [
      `${CFG}/paths`,
      (opts.paths ?? [])
        .map((p) => (p.bindFrom ? `bind ${p.path} ${p.bindFrom}\n` : `dir ${p.path}\n`))
        .join(''),
    ],
  ];
  for (const p of opts.paths ?? [])
    if (/\s/.test(p.path + (p.bindFrom ?? '')))
      throw new Error(`guest paths may not hold whitespace: ${p.path}`);
  await guest().sh(files.map(([path, content, mode]) => writeFileCommand(path, content, mode)).join('\n'));

  const serviceLog = async (service: 'kubelet' | 'containerd', lines = 30) =>
    (await guest().run(`tail -n ${lines} /var/log/kmod-e2e/${service}.log`)).output;

  const t0 = Date.now();
  await guest().sh('kmod-e2e-node start', 180_000);
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const waitReady = async (bootId: string, timeoutMs = opts.readyTimeoutMs ?? 600_000) => {
    try {
      return await eventually(
        `node ${vm.name} Ready with boot ID ${bootId}`,
        async () => {
          const n = await core.readNode({ name: vm.name });
          const isReady = n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
          return isReady && n.status?.nodeInfo?.bootID === bootId ? n : undefined;
        },
        timeoutMs,
        1000,
      );
    } catch (err) {
      throw new Error(
        `${(err as Error).message}\nkubelet log:\n${await serviceLog('kubelet').catch((e: Error) => e.message)}` +
          `\ncontainerd log:\n${await serviceLog('containerd', 10).catch((e: Error) => e.message)}\nconsole:\n${vm.consoleTail(20)}`,
        { cause: err },
      );
    }
  };
  const bootId = (await guest().sh('cat /proc/sys/kernel/random/boot_id')).trim();
  await waitReady(bootId);
  const readySeconds = (Date.now() - t0) / 1000;
  return { name: vm.name, readySeconds, waitReady, serviceLog };
}
