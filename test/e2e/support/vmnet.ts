/**
 * The VM's network link: a TAP device in the suite's own network namespace
 * (test/e2e/run.sh), with the host end's address and a route to the VM's pod
 * network. QEMU attaches the guest's virtio NIC to it, so the guest reaches
 * the API server (10.250.0.1 on the namespace's lo) and the API server
 * reaches the guest's kubelet; no packet can leave the namespace, and the
 * device goes with it at the latest.
 */
import { execFileSync, spawnSync } from 'node:child_process';

/** A TAP device to create. */
export interface TapOptions {
  /** The device's name (at most 15 bytes). */
  name: string;
  /** The host end's address with prefix length, e.g. 10.250.1.1/24. */
  hostAddress: string;
  /** Routes through the guest, e.g. its pod network: { dst: '10.252.0.0/24', via: '10.250.1.2' }. */
  routes: Array<{ dst: string; via: string }>;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** True when a network device of that name exists in this network namespace. */
export function linkExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

/**
 * Creates the TAP device, up, with its address and routes. Refuses outside
 * the suite's network namespace: the machine's own network is never touched.
 */
export function createTap(o: TapOptions): void {
  if (process.env.KMOD_E2E_IN_NETNS !== '1') {
    throw new Error(
      'refusing to create a TAP device outside the suite’s network namespace: run with `make e2e`',
    );
  }
  ip(['tuntap', 'add', 'dev', o.name, 'mode', 'tap']);
  try {
    ip(['addr', 'add', o.hostAddress, 'dev', o.name]);
    ip(['link', 'set', o.name, 'up']);
    for (const r of o.routes) ip(['route', 'add', r.dst, 'via', r.via, 'dev', o.name, 'onlink']);
  } catch (err) {
    deleteTap(o.name);
    throw err;
  }
}

/** Deletes the device (and with it its address and routes); no error when it is gone already. */
export function deleteTap(name: string): void {
  if (linkExists(name)) spawnSync('ip', ['link', 'del', 'dev', name], { stdio: 'ignore' });
}
