/**
 * An HTTP-level fault proxy in front of the real API server, for tests:
 * answers chosen requests with 409, 429 (with Retry-After) or 5xx instead of
 * forwarding them, or forwards them and then replaces the answer (the write
 * happened, the client is told it failed: an apiserver timeout after etcd
 * committed). Everything else is forwarded as is, watches included, and a
 * watch can be silenced: its connection stays open but no more of its bytes
 * reach the client (a frozen load balancer; the client's watchdog must notice).
 *
 * Unlike the TCP FaultProxy (faultproxy.ts) this one must see requests, so it
 * terminates TLS, with the local control plane's own serving certificate and
 * key (issued for 127.0.0.1): clients trust it exactly as they trust the API
 * server. Loopback only.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent, createServer, request, type Server } from 'node:https';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { listenOnLoopback, loopbackUrl, pointedAt } from './faultproxy.ts';

/** Which requests a fault hits, and how. */
export interface FaultRule {
  /** HTTP method (GET, POST, PUT, PATCH, DELETE); any if unset. */
  method?: string;
  /** Tested against the request path with its query string. */
  path: RegExp;
  /** The status to answer with. */
  status: number;
  /** How many matching requests to hit (then the rule is spent). */
  times: number;
  /** Sets Retry-After (seconds) on the answer, as the API server does on 429. */
  retryAfterSeconds?: number;
  /** Forward first and replace the real answer: the request took effect, the client sees a failure. */
  afterForward?: boolean;
}

/** One request the proxy answered with a fault. */
export interface InjectedFault {
  method: string;
  path: string;
  status: number;
  afterForward: boolean;
  at: number;
}

/** A request that reached the API server through the proxy. */
export interface ForwardedRequest {
  method: string;
  path: string;
  at: number;
}

/** A watch request forwarded through the proxy. */
export interface ForwardedWatch {
  /** The request path with its query string. */
  path: string;
  openedAt: number;
  /** When silenceWatches() stopped forwarding its bytes. */
  silencedAt?: number;
  /** When the client (or the API server) closed it. */
  closedAt?: number;
}

/** See the module comment. */
export class HttpFaultProxy {
  readonly #server: Server;
  readonly #target: URL;
  readonly #ca: string;
  readonly #agent = new Agent({ keepAlive: true });
  readonly #rules: FaultRule[] = [];
  /** Faults answered so far, in order. */
  readonly injected: InjectedFault[] = [];
  /** Requests forwarded so far (including those answered with an after-forward fault). */
  readonly forwarded: ForwardedRequest[] = [];
  /** Watches forwarded so far, open or closed, in the order opened. */
  readonly watches: ForwardedWatch[] = [];
  /** Open watches: what silenceWatches() cuts (the API server's answer, and the client's). */
  readonly #open = new Map<ForwardedWatch, { up: IncomingMessage; res: ServerResponse }>();

  private constructor(server: Server, target: URL, ca: string) {
    this.#server = server;
    this.#target = target;
    this.#ca = ca;
  }

  /**
   * Starts on a free 127.0.0.1 port, in front of `cp.server`, serving the
   * certificate and key the API server generated in `cp.dir`/certs.
   */
  static async start(cp: { server: string; caPem: string; dir: string }): Promise<HttpFaultProxy> {
    const certDir = join(cp.dir, 'certs');
    const srv = createServer({
      cert: readFileSync(join(certDir, 'apiserver.crt')),
      key: readFileSync(join(certDir, 'apiserver.key')),
    });
    const proxy = new HttpFaultProxy(srv, new URL(cp.server), cp.caPem);
    srv.on('request', (req: IncomingMessage, res: ServerResponse) => proxy.#handle(req, res));
    await listenOnLoopback(srv);
    return proxy;
  }

  /** https://127.0.0.1:PORT of the proxy. */
  get url(): string {
    return loopbackUrl(this.#server, 'https:');
  }

  /** Adds a rule; rules are tried in the order added, the first unspent match wins. */
  inject(rule: FaultRule): void {
    this.#rules.push({ ...rule });
  }

  /** Matching requests still to be hit, over all rules. */
  get pending(): number {
    return this.#rules.reduce((n, r) => n + r.times, 0);
  }

  /** The rules with hits left, as `METHOD path ×times left` (for a failure message). */
  get unspent(): string[] {
    return this.#rules.filter((r) => r.times > 0).map((r) => `${r.method} ${String(r.path)} ×${r.times}`);
  }

  /** A copy of `kc` whose current cluster points at this proxy. */
  kubeConfig(kc: KubeConfig): KubeConfig {
    return pointedAt(kc, this.url);
  }

  /**
   * Open watches whose path matches stop delivering: the API server's bytes are read and dropped,
   * the client's connection stays open and hears nothing (no close, no error). Watches opened
   * later are forwarded as usual. Returns the watches silenced.
   */
  silenceWatches(path: RegExp = /./): ForwardedWatch[] {
    const silenced: ForwardedWatch[] = [];
    for (const [w, { up, res }] of this.#open) {
      if (w.silencedAt !== undefined || !path.test(w.path)) continue;
      up.unpipe(res);
      // Keep draining the API server, so it neither blocks on us nor sees anything amiss.
      up.resume();
      w.silencedAt = Date.now();
      silenced.push(w);
    }
    return silenced;
  }

  /** Stops listening and closes every connection (watches included). */
  async close(): Promise<void> {
    this.#server.closeAllConnections();
    this.#agent.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const rule = this.#rules.find(
      (r) => r.times > 0 && (!r.method || r.method === method) && r.path.test(path),
    );
    if (rule) rule.times--;
    const fail = () => {
      this.injected.push({
        method,
        path,
        status: rule?.status ?? 0,
        afterForward: !!rule?.afterForward,
        at: Date.now(),
      });
      const body = JSON.stringify({
        kind: 'Status',
        apiVersion: 'v1',
        status: 'Failure',
        message: `injected by the test fault proxy: ${rule?.status}`,
        reason: reasonOf(rule?.status ?? 500),
        code: rule?.status,
      });
      res.writeHead(rule?.status ?? 500, {
        'content-type': 'application/json',
        ...(rule?.retryAfterSeconds !== undefined ? { 'retry-after': String(rule.retryAfterSeconds) } : {}),
      });
      res.end(body);
    };
    if (rule && !rule.afterForward) {
      req.resume();
      fail();
      return;
    }
    this.forwarded.push({ method, path, at: Date.now() });
    // client-node asks for a watch with ?watch=true (src/kube/watch.ts).
    const watch: ForwardedWatch | undefined = /[?&]watch=true(&|$)/.test(path)
      ? { path, openedAt: Date.now() }
      : undefined;
    if (watch) this.watches.push(watch);
    const upstream = request(
      {
        host: this.#target.hostname,
        port: this.#target.port,
        method,
        path,
        headers: { ...req.headers, host: this.#target.host },
        ca: this.#ca,
        agent: this.#agent,
      },
      (up) => {
        if (rule) {
          up.resume();
          up.on('end', fail);
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
        if (watch && up.statusCode === 200 && watch.closedAt === undefined)
          this.#open.set(watch, { up, res });
      },
    );
    upstream.on('error', () => res.destroy());
    // A client that goes away (a watch stopped) closes its upstream request too.
    res.on('close', () => {
      if (watch) {
        watch.closedAt = Date.now();
        this.#open.delete(watch);
      }
      upstream.destroy();
    });
    req.pipe(upstream);
  }
}

function reasonOf(status: number): string {
  if (status === 409) return 'Conflict';
  if (status === 429) return 'TooManyRequests';
  if (status === 503) return 'ServiceUnavailable';
  if (status === 504) return 'Timeout';
  return 'InternalError';
}
