/**
 * The suite's command channel into the VM guest: a root shell that does not
 * go through the cluster under test. QEMU exposes a virtio-serial port named
 * `kmod.e2e.ctl` as a Unix socket on this machine; in the guest,
 * test/e2e/vm/ctl reads one command per line and answers one line:
 *
 *   host → guest   <id> <base64 of a bash script>\n
 *   guest → host   <id> <exit status> <base64 of stdout and stderr>\n
 *
 * The guest runs one command at a time, in order. Tests read the kernel's
 * own truth through it (/proc/modules, /sys/module, boot_id, tainted), and
 * the VM node is configured through it before its kubelet exists.
 *
 * Why not a pod: a hostNetwork/privileged pod would need the kubelet,
 * containerd and the pod network of the node under test to be working, and
 * would share their failures; the serial channel works from the first second
 * of boot to the last, and is gone with QEMU.
 */
import { connect, type Socket } from 'node:net';

/** A command's result. */
export interface GuestResult {
  status: number;
  output: string;
}

interface Pending {
  resolve: (r: GuestResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  what: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One connection to a guest's command channel. */
export class GuestChannel {
  readonly #socket: Socket;
  readonly #pending = new Map<number, Pending>();
  #buffer = '';
  #nextId = 1;
  #closed: Error | undefined;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    const onGone = (err?: Error) => {
      this.#closed = err ?? new Error('the guest command channel closed');
      for (const [id, p] of this.#pending) {
        clearTimeout(p.timer);
        p.reject(new Error(`${p.what}: ${this.#closed.message}`));
        this.#pending.delete(id);
      }
    };
    socket.on('error', onGone);
    socket.on('close', () => onGone());
  }

  /**
   * Connects to QEMU's end of the channel (a Unix socket QEMU listens on),
   * retrying while QEMU starts. Connecting does not mean the guest answers:
   * see `VirtualMachine.boot`, which waits for a first answer.
   */
  static async connect(path: string, timeoutMs = 30_000): Promise<GuestChannel> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((res, rej) => {
          const s = connect(path);
          s.once('connect', () => res(s));
          s.once('error', rej);
        });
        return new GuestChannel(socket);
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`cannot connect to the guest channel ${path}: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  }

  #onData(chunk: string): void {
    this.#buffer += chunk;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 1);
      const [id, status, output = ''] = line.split(' ');
      const p = this.#pending.get(Number(id));
      if (!p) continue; // an answer to a command that timed out
      this.#pending.delete(Number(id));
      clearTimeout(p.timer);
      p.resolve({ status: Number(status), output: Buffer.from(output, 'base64').toString('utf8') });
    }
  }

  /**
   * Runs a bash script in the guest as root; resolves with its exit status
   * and output (never rejects for a non-zero status). Rejects when no answer
   * comes within `timeoutMs` or the channel closes; a command that timed out
   * still runs to its end in the guest, and later commands wait behind it.
   */
  run(script: string, timeoutMs = 60_000): Promise<GuestResult> {
    const what = `guest command ${JSON.stringify(script.length > 80 ? `${script.slice(0, 80)}…` : script)}`;
    if (this.#closed) return Promise.reject(new Error(`${what}: ${this.#closed.message}`));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer, what });
      this.#socket.write(`${id} ${Buffer.from(script).toString('base64')}\n`);
    });
  }

  /** Like run(), but returns the output and throws (with it) on a non-zero exit status. */
  async sh(script: string, timeoutMs?: number): Promise<string> {
    const r = await this.run(script, timeoutMs);
    if (r.status !== 0) throw new Error(`in the guest, exit ${r.status}: ${script}\n${r.output}`);
    return r.output;
  }

  /** Sends a script without waiting for an answer (a reboot never answers). */
  send(script: string): void {
    this.#socket.write(`${this.#nextId++} ${Buffer.from(script).toString('base64')}\n`);
  }

  /** Closes the connection (the guest's loop reopens its port and waits for the next one). */
  close(): void {
    this.#socket.destroy();
  }
}
