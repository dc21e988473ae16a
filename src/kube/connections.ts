/**
 * One connection pool per set of credentials for all of a process's API calls.
 *
 * client-node 2.0's KubeConfig builds a new undici Agent for every request it
 * authenticates (applySecurityAuthentication → createDispatcher, uncached; only
 * the https.Agent for websockets is cached). A new Agent has no connections, so
 * every API call opened a TCP connection and did a full TLS handshake with the
 * client certificate, and the connection was never reused: in a CPU profile of a
 * 300-node fan-out, TLS set-up (SecureContext, TLSSocket._start,
 * getPeerCertificate) was the largest self time after spawning helpers, and the
 * API server paid the handshake's other half for every write. client-go keeps
 * one transport per config; so do we: the dispatcher is cached under a key of
 * the exact TLS options it was built from, so credentials that change (a rotated
 * client certificate re-read from its file) get a new pool, and the old pool's
 * idle connections are closed.
 */
import { createHash } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';

type CreateDispatcher = (cluster: unknown, agentOptions: unknown) => unknown;

/** What a KubeConfig gets from reuseConnections(): its pool, for tests and metrics. */
export interface ConnectionReuse {
  /** How many dispatchers (pools) were built: one per distinct credentials seen. */
  readonly pools: () => number;
}

const REUSED = Symbol('kmod.reuseConnections');

/**
 * A hash of the dispatcher options, computed on every API call. Buffers (CA, certificate, key)
 * go into the hash as bytes, so the key changes with them; JSON.stringify would first turn each
 * into an array of numbers on every call (bench/RESULTS.md has what that cost).
 */
function optionsKey(options: unknown): string {
  const hash = createHash('sha256');
  const feed = (value: unknown): void => {
    if (value instanceof Uint8Array) hash.update(`b${value.length}:`).update(value);
    else if (Array.isArray(value)) {
      hash.update('[');
      value.forEach(feed);
      hash.update(']');
    } else if (value && typeof value === 'object') {
      hash.update('{');
      for (const [k, v] of Object.entries(value)) {
        hash.update(JSON.stringify(k));
        feed(v);
      }
      hash.update('}');
    } else hash.update(JSON.stringify(value) ?? 'u');
  };
  feed(options);
  return hash.digest('hex');
}

/**
 * Makes `kc` hand every request the same dispatcher for the same TLS options.
 * Idempotent. Throws when client-node no longer has the method this wraps, so an
 * upgrade that changes it fails loudly in tests instead of silently reverting to
 * a handshake per call.
 */
export function reuseConnections(kc: KubeConfig): ConnectionReuse {
  const target = kc as unknown as Record<PropertyKey, unknown>;
  const existing = target[REUSED] as ConnectionReuse | undefined;
  if (existing) return existing;
  const create = target.createDispatcher as CreateDispatcher | undefined;
  if (typeof create !== 'function') {
    throw new Error(
      '@kubernetes/client-node: KubeConfig.createDispatcher not found; src/kube/connections.ts needs updating for this version',
    );
  }
  let current: { key: string; dispatcher: unknown } | undefined;
  let built = 0;
  target.createDispatcher = function (cluster: unknown, agentOptions: unknown): unknown {
    const options = kc.createDispatcherOptions(
      cluster as Parameters<KubeConfig['createDispatcherOptions']>[0],
      agentOptions as Parameters<KubeConfig['createDispatcherOptions']>[1],
    );
    const key = optionsKey(options);
    if (current?.key === key) return current.dispatcher;
    const previous = current?.dispatcher as { close?: () => Promise<void> } | undefined;
    current = { key, dispatcher: create.call(kc, cluster, agentOptions) };
    built++;
    // Requests still running on the old pool finish; close() only stops it taking new ones.
    void previous?.close?.().catch(() => {});
    return current.dispatcher;
  };
  const reuse: ConnectionReuse = { pools: () => built };
  target[REUSED] = reuse;
  return reuse;
}
