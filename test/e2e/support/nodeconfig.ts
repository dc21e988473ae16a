/**
 * The configuration files of an end-to-end node (containerd, its CNI network,
 * the kubelet), shared by the node on this machine (node.ts) and the VM node
 * (vmnode.ts): both run Debian's containerd and runc with the project's
 * kubelet, and differ only in where their files live. Pure: each function
 * returns a file's content.
 */
import { join } from 'node:path';

/** Debian's containernetworking-plugins, on this machine and in the VM. */
export const CNI_BIN_DIR = '/usr/lib/cni';

/** Where a node's containerd keeps its state. */
export interface ContainerdPaths {
  root: string;
  state: string;
  /** The gRPC socket; the ttrpc socket is beside it. */
  socket: string;
  /** containerd's opt plugin directory. */
  opt: string;
  /** runc's --root for the CRI's containers. */
  runcRoot: string;
  /** The CNI network configuration directory. */
  cniConfDir: string;
}

/** containerd's config.toml (version 2) for a kubelet node: CRI with runc, cgroupfs, the CNI bridge. */
export function containerdConfig(p: ContainerdPaths, pauseImage: string): string {
  return `version = 2
root = "${p.root}"
state = "${p.state}"
# Plugins these machines have no use for; they only log errors at start.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "${p.socket}"

[ttrpc]
  address = "${p.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${p.opt}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  # Root on this machine lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below the current value.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  # The pods' network namespaces go under the CRI plugin's state dir (<state>/io.containerd.grpc.v1.cri/netns),
  # not the machine-wide /run/netns: the plugin removes a netns only when the sandbox is stopped through
  # the CRI, and a node that is torn down without that (a killed test run) must take them with its own dir.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${p.runcRoot}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${p.cniConfDir}"
`;
}

/** The node's CNI network: a bridge with host-local addresses from `podSubnet`, no NAT. */
export function cniConfig(podSubnet: string, ipamDataDir: string): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: 'kmod-e2e',
      plugins: [
        {
          type: 'bridge',
          bridge: 'kmod-cni0',
          isGateway: true,
          // No NAT: pods only talk to addresses of the suite's network (no iptables rules).
          ipMasq: false,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: podSubnet }]],
            routes: [{ dst: '0.0.0.0/0' }],
            dataDir: ipamDataDir,
          },
        },
      ],
    },
    null,
    2,
  );
}

/** What the kubelet's configuration file needs to know about its node. */
export interface KubeletSettings {
  /** The node's InternalIP; the kubelet serves on it. */
  address: string;
  port: number;
  healthzPort: number;
  /** containerd's socket. */
  containerdSocket: string;
  podLogsDir: string;
}

/** The KubeletConfiguration (JSON is YAML) of an end-to-end node. */
export function kubeletConfig(s: KubeletSettings): string {
  return JSON.stringify(
    {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: s.address,
      port: s.port,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort: s.healthzPort,
      // This machine: cgroup v1 (hybrid), swap may be on. (The VM: cgroup v2, no swap; both work.)
      cgroupDriver: 'cgroupfs',
      failCgroupV1: false,
      failSwapOn: false,
      // No QoS cgroup tree and no node-allocatable enforcement: nothing of the
      // machine's cgroup hierarchy is changed beyond the containers' own cgroups.
      cgroupsPerQOS: false,
      enforceNodeAllocatable: [],
      containerRuntimeEndpoint: `unix://${s.containerdSocket}`,
      podLogsDir: s.podLogsDir,
      authentication: {
        anonymous: { enabled: false },
        webhook: { enabled: true },
        x509: {},
      },
      authorization: { mode: 'Webhook' },
      // A test machine's disk and memory: never evict the suite's pods.
      evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      localStorageCapacityIsolation: false,
      serializeImagePulls: false,
      registerNode: true,
      staticPodPath: '',
      syncFrequency: '10s',
      fileCheckFrequency: '10s',
      nodeStatusUpdateFrequency: '5s',
    },
    null,
    2,
  );
}

/** Where the kubelet keeps its files, and who it is. */
export interface KubeletFiles {
  config: string;
  kubeconfig: string;
  rootDir: string;
  name: string;
  nodeIp: string;
  labels?: Record<string, string>;
}

/** The kubelet's command-line flags (after the binary). */
export function kubeletArgs(f: KubeletFiles): string[] {
  const labels = Object.entries(f.labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return [
    `--config=${f.config}`,
    `--kubeconfig=${f.kubeconfig}`,
    `--root-dir=${f.rootDir}`,
    `--cert-dir=${join(f.rootDir, 'pki')}`,
    `--hostname-override=${f.name}`,
    `--node-ip=${f.nodeIp}`,
    ...(labels ? [`--node-labels=${labels}`] : []),
    '--v=1',
  ];
}
