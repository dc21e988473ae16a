/**
 * Classifies errors from @kubernetes/client-node (ApiException carries the
 * HTTP status in `code`; watch errors carry `statusCode`).
 */

/** The HTTP status of a client-node error, or undefined. */
export function statusCode(err: unknown): number | undefined {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; statusCode?: unknown };
    if (typeof e.code === 'number') return e.code;
    if (typeof e.statusCode === 'number') return e.statusCode;
  }
  return undefined;
}

export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;
export const isConflict = (err: unknown): boolean => statusCode(err) === 409;
export const isAlreadyExists = (err: unknown): boolean => statusCode(err) === 409;
export const isGone = (err: unknown): boolean => statusCode(err) === 410;
export const isForbidden = (err: unknown): boolean => statusCode(err) === 403;

/**
 * True for a 404 about the object `name` itself. A 404 without the name (the
 * apiserver does not serve the resource at all: CRD missing or not yet
 * established) is not "the object is gone", and must not be treated as such.
 */
export function isObjectNotFound(err: unknown, name: string): boolean {
  if (!isNotFound(err)) return false;
  const body = (err as { body?: unknown }).body;
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return false;
    }
  }
  const details = (parsed as { details?: { name?: unknown } } | undefined)?.details;
  return details?.name === name;
}

/**
 * The wait the API server asked for in a Retry-After header (429 Too Many Requests, 503, and
 * client-go's retries on 5xx carry one), in ms; undefined without one. Reads client-node's
 * ApiException (`headers`, names lower-case as fetch gives them) and, for the controller's
 * joined errors, the longest wait in an AggregateError. Delta-seconds or an HTTP date (RFC 9110
 * §10.2.3); a value that is neither is ignored, as an absent header.
 */
export function retryAfterMs(err: unknown, now = Date.now()): number | undefined {
  if (err instanceof AggregateError) {
    const waits = err.errors.map((e) => retryAfterMs(e, now)).filter((w) => w !== undefined);
    return waits.length ? Math.max(...waits) : undefined;
  }
  if (!err || typeof err !== 'object') return undefined;
  const headers = (err as { headers?: unknown }).headers;
  if (!headers || typeof headers !== 'object') return undefined;
  const value = (headers as Record<string, unknown>)['retry-after'];
  if (typeof value !== 'string' || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP date names its day and month; Date.parse alone would take '-1' as the year -1.
  const at = /[a-z]/i.test(v) ? Date.parse(v) : NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
