/**
 * The HTTP endpoints every component serves: /metrics (Prometheus text),
 * /healthz (the process is alive) and /readyz (the component can do its job:
 * caches synced, and for the controller, it holds or is waiting for the lease).
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface HealthServerOptions {
  /** "host:port"; port 0 picks a free one. */
  address: string;
  registry: Registry;
  /** Returns undefined when ready, or the reason it is not. */
  readiness: () => string | undefined;
}

export interface HealthServer {
  /** The port actually bound. */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Parses "host:port" (or ":port": every address), refusing anything else with a clear message.
 * An IPv6 host may be bracketed (`[fd00::1]:8081`) or not (`fd00::1:8081`: the port follows the
 * last colon), as a pod's `$(POD_IP):PORT` gives either family.
 */
export function parseAddress(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = i > 0 ? address.slice(0, i).replace(/^\[(.*)\]$/, '$1') : '0.0.0.0';
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid listen address "${address}": expected host:port or :port`);
  }
  return { host, port };
}

/** Starts the health/metrics server. */
export async function startHealthServer(opts: HealthServerOptions): Promise<HealthServer> {
  const { host, port } = parseAddress(opts.address);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const why = opts.readiness();
      if (why === undefined) res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${why}\n`);
    } else if (path === '/metrics') {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('not found: try /metrics, /healthz or /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on ${opts.address}: ${err.code ?? err.message}`, { cause: err })),
    );
    server.listen(port, host, resolve);
  });
  const addr = server.address();
  return {
    port: addr && typeof addr === 'object' ? addr.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
