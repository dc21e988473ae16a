/**
 * Many raw watch streams on one API server, cheaply: HTTP/2 streams over a few
 * TLS sessions (kube-apiserver serves h2), not one TLS connection per watch.
 * For test/dispatch.test.ts (thousands of idle agents' watches) and the bench
 * floor (the N name-scoped watches an ideal design cannot avoid). Each stream
 * counts the events it received and hands each to its listener.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';

/** One open watch. */
export interface WatchStream {
  /** Events received (bookmarks left out). */
  readonly events: number;
  /** Called with each event (bookmarks left out). */
  onEvent: ((event: { type: string; object: Record<string, unknown> }) => void) | undefined;
  close(): void;
}

class TooManyRequests extends Error {}

/** See the module comment. */
export class WatchStreams {
  readonly #server: string;
  readonly #ca: string;
  readonly #token: string;
  readonly #perSession: number;
  readonly #sessions: Array<{ session: ClientHttp2Session; streams: number }> = [];
  readonly #open = new Set<ClientHttp2Stream>();

  /**
   * @param perSession streams per HTTP/2 session: at most kube-apiserver's
   *   --http2-max-streams-per-connection (it advertises 100 by default); a stream past it
   *   would wait, unopened, for another to close.
   */
  constructor(server: string, caPem: string, token: string, perSession = 90) {
    this.#server = server;
    this.#ca = caPem;
    this.#token = token;
    this.#perSession = perSession;
  }

  /**
   * Opens a watch on `path` (a collection, e.g. /apis/kmod.dev/v1alpha1/nodemodules) with
   * `query` (fieldSelector, resourceVersion...); resolves once the API server answered 200,
   * which it does after registering the watcher in its watch cache.
   */
  async open(path: string, query: Record<string, string>): Promise<WatchStream> {
    // 429 while the watch cache of a new resource initialises (ResilientWatchCacheInitialization).
    for (let tries = 1; ; tries++) {
      try {
        return await this.#openOnce(path, query);
      } catch (err) {
        if (!(err instanceof TooManyRequests) || tries >= 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  #openOnce(path: string, query: Record<string, string>): Promise<WatchStream> {
    const session = this.#session();
    const qs = new URLSearchParams({ watch: 'true', ...query }).toString();
    const stream = session.request({
      ':method': 'GET',
      ':path': `${path}?${qs}`,
      authorization: `Bearer ${this.#token}`,
      accept: 'application/json',
    });
    this.#open.add(stream);
    const handle = {
      events: 0,
      onEvent: undefined as WatchStream['onEvent'],
      close: () => {
        this.#open.delete(stream);
        stream.close();
      },
    };
    let buffered = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (!line.trim()) continue;
        const event = JSON.parse(line) as { type: string; object: Record<string, unknown> };
        if (event.type === 'BOOKMARK') continue;
        handle.events++;
        handle.onEvent?.(event);
      }
    });
    stream.on('error', () => this.#open.delete(stream));
    return new Promise((resolve, reject) => {
      stream.once('response', (headers) => {
        const status = Number(headers[':status']);
        if (status === 200) return resolve(handle);
        handle.close();
        const message = `watch ${path}?${qs}: HTTP ${status}`;
        reject(status === 429 ? new TooManyRequests(message) : new Error(message));
      });
      stream.once('error', reject);
    });
  }

  /** Watches currently open. */
  get size(): number {
    return this.#open.size;
  }

  /** Closes every stream and session. */
  close(): void {
    for (const s of this.#open) s.close();
    this.#open.clear();
    for (const { session } of this.#sessions) session.close();
    this.#sessions.length = 0;
  }

  #session(): ClientHttp2Session {
    let last = this.#sessions.at(-1);
    if (!last || last.streams >= this.#perSession || last.session.closed || last.session.destroyed) {
      const session = http2.connect(this.#server, { ca: this.#ca });
      session.on('error', () => {}); // a stream's own error handler reports what matters
      last = { session, streams: 0 };
      this.#sessions.push(last);
    }
    last.streams++;
    return last.session;
  }
}
