/**
 * A TCP proxy in front of the apiserver that fails the way networks fail
 * (frozen connections, resets, refusals), and the loopback plumbing it shares
 * with the HTTP fault proxy (httpfaults.ts).
 *
 * client-node 2.x sends its requests through undici, which nock cannot
 * intercept; faults are therefore injected on the wire, in front of the real
 * apiserver. The proxy forwards bytes and never terminates TLS, so the
 * apiserver's certificate (issued for 127.0.0.1) stays valid through it.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

interface Pair {
  client: Socket;
  upstream: Socket;
  frozen?: boolean;
}

/** A TCP proxy in front of one apiserver, with switches for freezing and refusing. */
export class FaultProxy {
  readonly #server: Server;
  readonly #target: URL;
  readonly #pairs = new Set<Pair>();
  #refusing = false;
  #accepted = 0;

  private constructor(server: Server, target: URL) {
    this.#server = server;
    this.#target = target;
  }

  /** Starts a proxy on 127.0.0.1 (a free port) forwarding to `server` (e.g. https://127.0.0.1:6443). */
  static async start(server: string): Promise<FaultProxy> {
    const target = new URL(server);
    const srv = createServer();
    const proxy = new FaultProxy(srv, target);
    srv.on('connection', (client) => proxy.#onConnection(client));
    await listenOnLoopback(srv);
    return proxy;
  }

  /** https://127.0.0.1:PORT of the proxy. */
  get url(): string {
    return loopbackUrl(this.#server, this.#target.protocol);
  }

  /** Connections accepted so far (refused ones included). */
  get accepted(): number {
    return this.#accepted;
  }

  /** Connections open now. */
  get open(): number {
    return this.#pairs.size;
  }

  /**
   * Bytes that have reached the proxy on frozen connections and sit there,
   * unforwarded (either direction). A test that checks "nothing was
   * delivered while frozen" waits for this to grow first: then there was
   * something to deliver.
   */
  get held(): number {
    let bytes = 0;
    for (const { client, upstream, frozen } of this.#pairs)
      if (frozen) bytes += client.readableLength + upstream.readableLength;
    return bytes;
  }

  /** A copy of `kc` whose current cluster points at this proxy. */
  kubeConfig(kc: KubeConfig): KubeConfig {
    return pointedAt(kc, this.url);
  }

  /**
   * Every open connection stops forwarding in both directions but stays
   * open: the peer sees silence, not an error. New connections still work.
   */
  freeze(): void {
    for (const pair of this.#pairs) {
      const { client, upstream } = pair;
      pair.frozen = true;
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
  }

  /** While on, new connections are accepted and reset at once. */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  /** Resets every open connection. */
  dropAll(): void {
    for (const { client, upstream } of this.#pairs) {
      client.resetAndDestroy();
      upstream.destroy();
    }
    this.#pairs.clear();
  }

  /** Drops all connections and stops listening. */
  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #onConnection(client: Socket): void {
    this.#accepted++;
    if (this.#refusing) {
      client.resetAndDestroy();
      return;
    }
    const upstream = createConnection({ host: this.#target.hostname, port: Number(this.#target.port) });
    const pair = { client, upstream };
    this.#pairs.add(pair);
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** A copy of `kc` whose current cluster's server is `server` (a proxy in front of it). */
export function pointedAt(kc: KubeConfig, server: string): KubeConfig {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  const copy = new KubeConfig();
  copy.loadFromOptions({
    clusters: kc.clusters.map((c) => (c.name === cluster.name ? { ...c, server } : c)),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.getCurrentContext(),
  });
  return copy;
}

/** Listens on a free 127.0.0.1 port (the proxies are loopback only). */
export function listenOnLoopback(server: { listen: Server['listen']; once: Server['once'] }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
}

/** `protocol`//127.0.0.1:PORT of a listening server (protocol as URL has it: 'https:'). */
export function loopbackUrl(server: Pick<Server, 'address'>, protocol: string): string {
  const addr = server.address();
  if (!addr || typeof addr !== 'object') throw new Error('proxy not listening');
  return `${protocol}//127.0.0.1:${addr.port}`;
}
