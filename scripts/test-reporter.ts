/**
 * The test runner's reporter for `make test`, `make unit`, `make integration`
 * and `make e2e`: node:test's own `spec` output, plus two things it lacks.
 *
 * - A test that called `t.skip()` and then failed fails the run (node:test
 *   reports it as skipped, with exit status 0).
 * - With `CI=true` (`.ci/run` sets it), a skipped or todo test fails the run. A
 *   test skips when a tool or a privilege is missing (Go, Helm, CAP_SETPCAP);
 *   on a developer's laptop that is a note, in CI it would turn "not run" into
 *   a green run. The skipped tests are listed with their reasons, and the exit
 *   status is 1.
 * - With `TEST_RESULTS=path`, the run's counts and wall time are recorded
 *   there as JSON, section `tests` (test/support/results.ts):
 *   `TEST_RESULTS=test/results.json CI=true make test` writes the committed
 *   file the README's figure comes from; `make e2e` records into
 *   test/e2e/results.json.
 *
 * node:test sets a failing exit status only on a failed test (it never resets
 * one to 0), so setting `process.exitCode` here, once every event is in, is
 * what makes the run fail.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { spec } from 'node:test/reporters';
import { recordResults } from '../test/support/results.ts';

/** What a test event carries that matters here (node:test's TestEvent data, in part). */
interface TestEventData {
  name?: string;
  file?: string;
  nesting?: number;
  skip?: string | boolean;
  todo?: string | boolean;
  details?: { type?: string; duration_ms?: number };
}
interface TestEvent {
  type: string;
  data?: TestEventData;
}

/** True when `value` is set the way CI services set it (`CI=true`, `CI=1`). */
export function ciEnabled(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/** One skipped or todo test, as listed at the end of a CI run. */
export function describeSkip(data: TestEventData): string {
  const why = (v: string | boolean | undefined) => (typeof v === 'string' && v !== '' ? `: ${v}` : '');
  const kind = data.skip !== undefined ? `skipped${why(data.skip)}` : `todo${why(data.todo)}`;
  return `${data.file ?? '?'}: ${data.name ?? '?'} (${kind})`;
}

/** The counts of a run, as the spec reporter's summary gives them. */
export interface RunCounts {
  tests: number;
  suites: number;
  pass: number;
  fail: number;
  cancelled: number;
  skipped: number;
  todo: number;
  durationMs: number;
}

/** See the module comment. */
class TestReporter extends Transform {
  readonly #spec = new spec();
  readonly #ci = ciEnabled(process.env.CI);
  readonly #resultsPath = process.env.TEST_RESULTS;
  readonly #skipped: string[] = [];
  /** Tests that called t.skip() and then failed: node:test reports them as skipped, exit status 0. */
  readonly #failedAfterSkip: string[] = [];
  readonly #counts: Partial<RunCounts> = {};
  readonly #started = Date.now();

  constructor() {
    super({ writableObjectMode: true });
    this.#spec.on('data', (chunk: string | Buffer) => this.push(chunk));
  }

  override _transform(event: TestEvent, _enc: BufferEncoding, done: TransformCallback): void {
    const data = event.data;
    // Suites report their children; a skipped suite (describe with `skip`) reports itself as one.
    if ((event.type === 'test:pass' || event.type === 'test:fail') && data) {
      if (data.skip !== undefined || data.todo !== undefined) this.#skipped.push(describeSkip(data));
      if (event.type === 'test:fail' && data.skip !== undefined && data.details?.type !== 'suite')
        this.#failedAfterSkip.push(describeSkip(data));
    }
    // The summary's counts arrive as diagnostics of the outermost level ("tests 12", "pass 12", ...).
    if (event.type === 'test:diagnostic' && data && (data.nesting ?? 0) === 0) {
      const m = /^(tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) ([\d.]+)$/.exec(
        String((data as { message?: string }).message ?? ''),
      );
      if (m) {
        const key = m[1] === 'duration_ms' ? 'durationMs' : (m[1] as keyof RunCounts);
        this.#counts[key] = Number(m[2]);
      }
    }
    this.#spec.write(event, done);
  }

  override _flush(done: TransformCallback): void {
    this.#spec.end(() => {
      if (this.#resultsPath) this.#writeResults(this.#resultsPath);
      if (this.#failedAfterSkip.length > 0) {
        // Anywhere, not only in CI: the test failed, whatever it said before.
        this.push(
          `\n\u2716 ${this.#failedAfterSkip.length} test(s) failed after t.skip() (a skip must return):\n` +
            `${this.#failedAfterSkip.map((s) => `  ${s}`).join('\n')}\n`,
        );
        process.exitCode = 1;
      }
      if (this.#ci && this.#skipped.length > 0) {
        this.push(
          `\n\u2716 CI=true: ${this.#skipped.length} test(s) did not run, and in CI that is a failure ` +
            `(install what they need, or fix the skip):\n${this.#skipped.map((s) => `  ${s}`).join('\n')}\n`,
        );
        process.exitCode = 1;
      }
      done();
    });
  }

  #writeResults(path: string): void {
    // A section of its own: `make e2e` records more sections (image, node) into the same file.
    recordResults(path, 'tests', {
      ci: this.#ci,
      wallSeconds: Math.round((Date.now() - this.#started) / 100) / 10,
      counts: this.#counts,
      skipped: this.#skipped,
    });
    this.push(`wrote ${path}\n`);
  }
}

export default new TestReporter();
