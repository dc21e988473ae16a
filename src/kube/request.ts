/**
 * A raw, authenticated GET against the apiserver, for the one place the
 * generated clients do not fit: listing any path (core `/api/v1/nodes` and
 * CRD paths alike) with field/label selectors and paging, with a deadline.
 *
 * It uses node:https with the kubeconfig's TLS material and auth header
 * (KubeConfig.applyToHTTPSOptions, which also runs exec/oidc/token-file
 * authenticators), so it needs no HTTP library of its own.
 */
import http from 'node:http';
import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

/** A non-2xx answer; `statusCode` is what errors.ts's classifiers read. */
export class HttpStatusError extends Error {
  readonly statusCode: number;
  readonly body: string;
  constructor(statusCode: number, message: string, body: string) {
    super(message);
    this.name = 'HttpStatusError';
    this.statusCode = statusCode;
    this.body = body;
  }
}

/**
 * GETs `path` (plus `query`, undefined values skipped) and parses the JSON
 * answer. Rejects with HttpStatusError on a non-2xx status (message: the
 * apiserver's Status message when there is one), and with a TimeoutError
 * when the whole exchange takes longer than `timeoutMs`: a half-open
 * connection must not hang the caller forever.
 */
export async function getJson<T>(
  kc: KubeConfig,
  path: string,
  query: Record<string, string | number | undefined> = {},
  timeoutMs = 60_000,
): Promise<T> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('kubeconfig has no current cluster');
  // Concatenate like client-node's Watch: the server URL may carry a path prefix (API proxies).
  const url = new URL(cluster.server + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));

  const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
  await kc.applyToHTTPSOptions(opts);
  const request = url.protocol === 'http:' ? http.request : https.request;

  return new Promise<T>((resolve, reject) => {
    const req = request(url, { ...opts, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 299) {
          reject(new HttpStatusError(status, `GET ${path}: HTTP ${status}: ${statusMessage(body)}`, body));
          return;
        }
        try {
          resolve(JSON.parse(body) as T);
        } catch (err) {
          reject(new Error(`GET ${path}: invalid JSON: ${(err as Error).message}`, { cause: err }));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function statusMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    if (typeof parsed.message === 'string') return parsed.message;
  } catch {
    /* not a Status object */
  }
  return body.slice(0, 200);
}
