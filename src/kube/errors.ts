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
