/**
 * A QEMU virtual machine running Debian's kernel, for the end-to-end suite's
 * real-kernel tier: the only place a module is really loaded (this machine's
 * own kernel must never change).
 *
 * - Images: test/e2e/vm-image.sh (kernel, initramfs, root disk; cached).
 * - Disk: a qcow2 overlay in this VM's temp dir on top of the cached disk,
 *   so the cache is never written and a reboot keeps what the guest wrote.
 *   Docker-archives to import are attached as read-only raw disks.
 * - CPU: TCG only (`-accel tcg,thread=multi -cpu max`): nested KVM fails on
 *   these machines ("KVM internal error ... emulation failure").
 * - Network: a TAP device in the suite's network namespace (vmnet.ts).
 * - Command channel: a virtio-serial port, a Unix socket here (guest.ts).
 * - Console: the kernel's and the boot script's output, in console.log.
 * - Reboot: `-no-reboot` makes QEMU exit when the guest resets; `reboot()`
 *   then boots it again, with another kernel command line if asked (e.g.
 *   module.sig_enforce=1): the same disk, a new boot ID.
 *
 * `stop()` kills QEMU, deletes the TAP device and the temp dir (overlay,
 * sockets, logs); `leftovers()` lists what would still be there.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestChannel } from './guest.ts';
import { processesMentioning } from './node.ts';
import { createTap, deleteTap, linkExists, type TapOptions } from './vmnet.ts';

const tempPrefix = 'kmod-e2e-vm-';

/** What test/e2e/vm-image.sh built. */
export interface VmImages {
  kernel: string;
  initrd: string;
  disk: string;
  /** The kernel release (`uname -r` in the guest). */
  release: string;
  /** The Debian package version of the kernel. */
  version: string;
  /** The unsigned out-of-tree module's name (in /lib/modules/<release>/extra). */
  unsigned: string;
}

/** Builds (or finds in the cache) the VM's images. */
export function vmImages(root: string): VmImages {
  const out = execFileSync('bash', [join(root, 'test/e2e/vm-image.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const fields = new Map(
    out
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)] as const),
  );
  const get = (k: string) => {
    const v = fields.get(k);
    if (!v) throw new Error(`test/e2e/vm-image.sh printed no ${k}:\n${out}`);
    return v;
  };
  return {
    kernel: get('kernel'),
    initrd: get('initrd'),
    disk: get('disk'),
    release: get('release'),
    version: get('version'),
    unsigned: get('unsigned'),
  };
}

/** How the VM is started. */
export interface VmOptions {
  images: VmImages;
  /** The guest's host name (and the Node's name). */
  name: string;
  /** The guest's address with prefix length, e.g. 10.250.1.2/24. */
  address: string;
  /** The TAP device and the host end of the link. */
  tap: TapOptions;
  /** Files attached read-only as raw disks, serials kmod-disk-0, kmod-disk-1, ... in this order. */
  disks?: string[];
  memoryMb?: number;
  cpus?: number;
}

/** One boot of the VM. */
export interface Boot {
  /** The guest kernel's boot ID. */
  bootId: string;
  /** Seconds from starting QEMU to the first answer on the command channel. */
  seconds: number;
  /** The kernel command line the guest reports (/proc/cmdline). */
  cmdline: string;
}

/** A running (or stopped) VM. */
export interface VirtualMachine {
  readonly name: string;
  readonly dir: string;
  /** The command channel of the current boot. */
  readonly guest: GuestChannel;
  /** Starts QEMU with these extra kernel parameters and waits for the guest to answer. */
  boot(kernelArgs?: string[]): Promise<Boot>;
  /**
   * Reboots from inside the guest as an init system would (SIGTERM to every
   * process, a few seconds, sync, reset), then boots again with `kernelArgs`.
   */
  reboot(kernelArgs?: string[]): Promise<Boot>;
  /** The last lines of the guest's console. */
  consoleTail(lines?: number): string;
  /** Stops QEMU, deletes the TAP device and the temp dir (idempotent). */
  stop(): Promise<void>;
  /** What stop() left behind: processes, the TAP device, the temp dir (empty = clean). */
  leftovers(): string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Creates the VM's temp dir, disk overlay and TAP device; `boot()` starts it. */
export function createVm(opts: VmOptions): VirtualMachine {
  const dir = mkdtempSync(join(tmpdir(), tempPrefix));
  const overlay = join(dir, 'disk.qcow2');
  const consoleLog = join(dir, 'console.log');
  const ctlSocket = join(dir, 'ctl.sock');
  let qemu: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let guest: GuestChannel | undefined;
  let stopped = false;

  const killQemu = (signal: NodeJS.Signals) => {
    if (qemu?.pid !== undefined && qemu.exitCode === null && qemu.signalCode === null) {
      try {
        process.kill(-qemu.pid, signal);
      } catch {
        /* gone */
      }
    }
  };
  const cleanupSync = () => {
    killQemu('SIGKILL');
    for (const p of processesMentioning(dir)) spawnSync('kill', ['-KILL', String(p.pid)]);
    deleteTap(opts.tap.name);
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanupSync);

  try {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', opts.images.disk, overlay], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    createTap(opts.tap);
  } catch (err) {
    cleanupSync();
    process.removeListener('exit', cleanupSync);
    throw err;
  }

  const gateway = opts.tap.hostAddress.split('/')[0]!;
  const start = (kernelArgs: string[]) => {
    const append = [
      'console=ttyS0',
      'panic=-1',
      'quiet',
      `kmod_e2e.ip=${opts.address}`,
      `kmod_e2e.gw=${gateway}`,
      `kmod_e2e.hostname=${opts.name}`,
      ...kernelArgs,
    ].join(' ');
    const args = [
      '-name',
      `kmod-e2e-${opts.name}`,
      '-accel',
      'tcg,thread=multi',
      '-cpu',
      'max',
      '-smp',
      String(opts.cpus ?? 2),
      '-m',
      String(opts.memoryMb ?? 2048),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      opts.images.kernel,
      '-initrd',
      opts.images.initrd,
      '-append',
      append,
      '-chardev',
      `file,id=console,path=${consoleLog}`,
      '-serial',
      'chardev:console',
      '-drive',
      `file=${overlay},format=qcow2,if=none,id=root,discard=unmap`,
      '-device',
      'virtio-blk-pci,drive=root,serial=kmod-root',
      ...(opts.disks ?? []).flatMap((f, i) => [
        '-drive',
        `file=${f},format=raw,if=none,id=disk${i},readonly=on`,
        '-device',
        `virtio-blk-pci,drive=disk${i},serial=kmod-disk-${i}`,
      ]),
      '-netdev',
      `tap,id=net0,ifname=${opts.tap.name},script=no,downscript=no`,
      '-device',
      'virtio-net-pci,netdev=net0',
      '-device',
      'virtio-serial-pci',
      '-chardev',
      `socket,id=ctl,path=${ctlSocket},server=on,wait=off`,
      '-device',
      'virtserialport,chardev=ctl,name=kmod.e2e.ctl',
    ];
    const fd = openSync(join(dir, 'qemu.log'), 'a');
    // setpriv --pdeathsig: the kernel kills QEMU if the test process dies.
    qemu = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...args], {
      cwd: dir,
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    closeSync(fd);
    const child = qemu;
    exited = new Promise<void>((res) => {
      child.on('exit', () => res());
      child.on('error', () => res());
    });
  };

  const tailOf = (path: string, lines: number) => {
    try {
      return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(none)';
    }
  };
  const consoleTail = (lines = 40) =>
    `${tailOf(consoleLog, lines)}\n--- qemu.log ---\n${tailOf(join(dir, 'qemu.log'), 10)}`;

  const boot = async (kernelArgs: string[] = []): Promise<Boot> => {
    if (stopped) throw new Error('the VM was stopped');
    const t0 = Date.now();
    start(kernelArgs);
    const timeoutMs = 300_000;
    try {
      const connected = await Promise.race([
        GuestChannel.connect(ctlSocket, 60_000),
        exited.then(() => 'exited' as const),
      ]);
      if (connected === 'exited') throw new Error('QEMU exited during boot');
      guest = connected;
      const ch = guest;
      // The first answer comes when the boot script has started the channel's loop.
      const answer = ch.run('cat /proc/sys/kernel/random/boot_id /proc/cmdline', timeoutMs);
      const r = await Promise.race([answer, exited.then(() => 'exited' as const)]);
      if (r === 'exited') throw new Error('QEMU exited during boot');
      const [bootId = '', cmdline = ''] = r.output.trim().split('\n');
      return { bootId, cmdline, seconds: (Date.now() - t0) / 1000 };
    } catch (err) {
      throw new Error(`the VM did not boot: ${(err as Error).message}\nconsole:\n${consoleTail()}`, {
        cause: err,
      });
    }
  };

  const reboot = async (kernelArgs: string[] = []): Promise<Boot> => {
    const ch = guest;
    if (!ch) throw new Error('the VM is not running');
    // As an init system does (test/e2e/vm/reboot): SIGTERM everything (the agent drains), wait,
    // sync, reset. The reset ends the command too, so no answer comes.
    ch.send('kmod-e2e-reboot');
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 120_000).unref());
    if ((await Promise.race([exited, timer])) === 'timeout') {
      throw new Error(`the guest did not reset within 120 s\nconsole:\n${consoleTail()}`);
    }
    ch.close();
    return boot(kernelArgs);
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    guest?.close();
    killQemu('SIGTERM');
    const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref());
    if ((await Promise.race([exited, timer])) === 'timeout') {
      killQemu('SIGKILL');
      await exited;
    }
    for (let i = 0; i < 50 && processesMentioning(dir).length > 0; i++) await sleep(100);
    deleteTap(opts.tap.name);
    rmSync(dir, { recursive: true, force: true });
    process.removeListener('exit', cleanupSync);
  };

  return {
    name: opts.name,
    dir,
    get guest() {
      if (!guest) throw new Error('the VM has not booted');
      return guest;
    },
    boot,
    reboot,
    consoleTail,
    stop,
    leftovers: () => [
      ...processesMentioning(dir).map((p) => `process ${p.pid}: ${p.cmd}`),
      ...(linkExists(opts.tap.name) ? [`network device ${opts.tap.name}`] : []),
      ...(existsSync(dir) ? [`dir ${dir}`] : []),
    ],
  };
}
