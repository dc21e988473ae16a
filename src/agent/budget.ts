/**
 * Keeps a node's status within its bounds before the agent writes it: every
 * text field within the CRD's limits (a write past one would be refused with
 * 422, and with it every other result of the node), and the whole list of
 * results within NODE_STATUS_BUDGET_BYTES, so that a node holding
 * MAX_REQUESTS_PER_NODE requests stays far below etcd's 1.5 MiB whatever its
 * helpers printed. Pure, unit-tested with the worst case.
 *
 * What goes first when the list is over budget: the bulky evidence of
 * finished results (stderr tail, kernel log, resolved and verified sets),
 * successes before failures, oldest first; then the messages of finished
 * results, cut short; only then the same of results still running (at most
 * the node's helper cap of them are: a claim is written inside a helper slot).
 * Every result's phase, reason, exit code, times and attempt are never
 * trimmed.
 */
import { stripControl } from '../api/text.ts';
import { NODE_STATUS_BUDGET_BYTES, RESULT_LIMITS, isTerminal, type NodeModulesResult } from '../api/types.ts';
import { cleanReport } from './reporttext.ts';

/** A message cut for the budget keeps this many characters. */
const TRIMMED_MESSAGE_CHARS = 128;

/** Cuts `s` to at most `max` UTF-16 code units, marking the cut with an ellipsis. */
export function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`;
}

/** Keeps the last `maxBytes` bytes of `s` (a tail: the end of stderr is what explains a failure). */
export function tail(s: string, maxBytes: number): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= maxBytes) return s;
  // Drop a partial UTF-8 character at the cut.
  let start = b.length - maxBytes;
  while (start < b.length && ((b[start] ?? 0) & 0xc0) === 0x80) start++;
  return b.subarray(start).toString('utf8');
}

/**
 * One result within the CRD's field limits, its texts inert (reporttext.ts: control characters
 * but newline and tab stripped); the tails kept within their limits in bytes too.
 */
export function withinLimits(r: NodeModulesResult): NodeModulesResult {
  const out: NodeModulesResult = cleanReport({ ...r });
  if (out.stderrTail !== undefined) out.stderrTail = tail(out.stderrTail, RESULT_LIMITS.stderrTail);
  if (out.kernelLog !== undefined) out.kernelLog = tail(stripControl(out.kernelLog), RESULT_LIMITS.kernelLog);
  if (out.errno !== undefined) out.errno = cut(stripControl(out.errno), RESULT_LIMITS.errno);
  if (out.signal !== undefined) out.signal = cut(stripControl(out.signal), 16);
  for (const k of ['resolved', 'verified'] as const) {
    const v = out[k];
    if (v) out[k] = v.slice(0, RESULT_LIMITS.names).map((n) => cut(n, RESULT_LIMITS.name));
  }
  return out;
}

/** Bytes of the results as written (JSON). */
export function sizeOf(results: readonly NodeModulesResult[]): number {
  return Buffer.byteLength(JSON.stringify(results));
}

/**
 * The results within the field limits and, trimming as the module comment says, within
 * `budgetBytes`. Returns new objects; the order is kept.
 */
export function fitResults(
  results: readonly NodeModulesResult[],
  budgetBytes: number = NODE_STATUS_BUDGET_BYTES,
): NodeModulesResult[] {
  const out = results.map(withinLimits);
  let size = sizeOf(out);
  if (size <= budgetBytes) return out;
  // Finished results, successes first, oldest first: what they carry beyond the outcome goes first.
  const rank = (r: NodeModulesResult) => (!isTerminal(r.phase) ? 2 : r.phase === 'Failed' ? 1 : 0);
  const order = out
    .map((r, i) => ({ r, i }))
    .sort((a, b) => rank(a.r) - rank(b.r) || (a.r.finishTime ?? '').localeCompare(b.r.finishTime ?? ''));
  const finished = order.filter(({ r }) => isTerminal(r.phase));
  const running = order.filter(({ r }) => !isTerminal(r.phase));
  const steps: Array<(r: NodeModulesResult) => NodeModulesResult> = [
    (r) => {
      const { stderrTail, kernelLog, ...rest } = r;
      return stderrTail === undefined && kernelLog === undefined ? r : rest;
    },
    (r) => {
      const { resolved, verified, ...rest } = r;
      return resolved === undefined && verified === undefined ? r : rest;
    },
    (r) =>
      r.message === undefined || r.message.length <= TRIMMED_MESSAGE_CHARS
        ? r
        : { ...r, message: cut(r.message, TRIMMED_MESSAGE_CHARS) },
  ];
  for (const [step, which] of [
    ...steps.map((s) => [s, finished] as const),
    ...steps.map((s) => [s, running] as const),
  ]) {
    for (const { i } of which) {
      const before = out[i] as NodeModulesResult;
      const after = step(before);
      if (after === before) continue;
      size -= Buffer.byteLength(JSON.stringify(before)) - Buffer.byteLength(JSON.stringify(after));
      out[i] = after;
      if (size <= budgetBytes) return out;
    }
  }
  return out;
}
