/**
 * The text an agent writes into a result (an entry of its node's NodeModules
 * status): inert and bounded, and what to write when the API server refuses a
 * result anyway. Pure; the functions
 * read and return only the text fields, whatever object carries them.
 *
 * Why: a result the API server refuses as invalid (422: a field over its
 * CRD's maxLength, say) was kept and retried forever, so the user never saw
 * it. A 422 is final for that body: nothing but a different body can pass.
 * So every text is cut to its limit before the write, and a refused write
 * falls back to a shortened form, then to a minimal one, then gives up.
 */
import { boundText, stripControl } from '../api/text.ts';
import { RESULT_LIMITS } from '../api/types.ts';

/** The NodeModules CRD's maxLength of status.results[].message (crds/kmod.dev_nodemodules.yaml). */
export const MAX_MESSAGE = RESULT_LIMITS.message;
/** The NodeModules CRD's maxLength of status.results[].stderrTail. */
export const MAX_STDERR_TAIL = RESULT_LIMITS.stderrTail;
/** The NodeModules CRD's maxLength of status.results[].reason. */
export const MAX_REASON = 128;
/** The shortened form's bound of message and stderr tail: what any sane schema takes. */
export const SHORT_TEXT = 512;

/** The minimal form's message: short enough for any schema that takes a message at all. */
export const MINIMAL_MESSAGE = 'result shortened: the API server refused it as invalid (422)';

/** The text fields of a result. */
export interface ReportText {
  reason?: string;
  message?: string;
  stderrTail?: string;
}

function bounded<T extends ReportText>(r: T, messageMax: number, tailMax: number): T {
  const out = { ...r };
  if (out.reason !== undefined) out.reason = boundText(stripControl(out.reason), MAX_REASON);
  if (out.message !== undefined) out.message = boundText(stripControl(out.message), messageMax);
  if (out.stderrTail !== undefined) {
    // The end of stderr is what matters (the error comes last): cut from the front.
    const tail = stripControl(out.stderrTail);
    out.stderrTail = tail.length <= tailMax ? tail : tail.slice(tail.length - tailMax);
  }
  return out;
}

/**
 * `r` as an agent writes it: control characters (but newline and tab)
 * stripped from reason, message and stderr tail, each cut to its CRD
 * maximum. Every result goes through this before it is written.
 */
export function cleanReport<T extends ReportText>(r: T): T {
  return bounded(r, MAX_MESSAGE, MAX_STDERR_TAIL);
}

/** What to do after the API server refused a result as invalid (422). */
export type AfterRefusal<T> = { write: T } | { drop: string };

/**
 * The decision after the `refusals`-th 422 on one result (1 = the first):
 * first a shortened form (message and stderr tail cut to SHORT_TEXT, the
 * rest kept); then a minimal one (what `keep` keeps of it, the reason, and
 * MINIMAL_MESSAGE; the caller logs the API server's own words); then give
 * up: a 422 never passes on a retry of the same body, so retrying would
 * never end.
 *
 * @param keep the fields of the result that identify it (phase, times, attempt...),
 *   taken from it by the caller, which knows the object's shape
 * @param apiMessage what the API server said, for the message when giving up
 */
export function afterInvalid<T extends ReportText>(
  r: T,
  refusals: number,
  keep: (r: T) => T,
  apiMessage: string,
): AfterRefusal<T> {
  if (refusals <= 1) return { write: bounded(r, SHORT_TEXT, SHORT_TEXT) };
  if (refusals === 2) {
    return { write: bounded({ ...keep(r), reason: r.reason, message: MINIMAL_MESSAGE }, SHORT_TEXT, 0) };
  }
  return { drop: `the API server refused this result ${refusals} times as invalid: ${apiMessage}` };
}
