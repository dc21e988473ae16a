/**
 * scripts/test-reporter.ts: the reporter `make test` runs with. Run on small
 * test files of its own, the way the Makefile runs it: a skip fails the run
 * under CI=true only; a test that fails after t.skip() fails it anywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ciEnabled, describeSkip } from './test-reporter.ts';

const root = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'kmod-reporter-test-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** Runs `node --test` with the reporter on one test file holding `body`. */
function runWith(
  body: string,
  env: Record<string, string | undefined>,
): { code: number | null; out: string } {
  const file = join(dir, `t${Math.random().toString(36).slice(2)}.test.ts`);
  writeFileSync(file, `import { test, describe, it } from 'node:test';\n${body}\n`);
  const r = spawnSync(
    join(root, 'node_modules/.bin/node'),
    ['--test', '--test-reporter=./scripts/test-reporter.ts', file],
    {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, CI: undefined, TEST_RESULTS: undefined, ...env },
    },
  );
  return { code: r.status, out: r.stdout + r.stderr };
}

const SKIPS = `test('runs', () => {});
test('needs a tool', (t) => { t.skip('no tool here'); });
describe('needs root', { skip: 'not root' }, () => { it('inner', () => {}); });`;

test('a skip is a note on a laptop, and fails the run with CI=true, naming each skipped test', () => {
  const laptop = runWith(SKIPS, {});
  assert.equal(laptop.code, 0, laptop.out);
  assert.match(laptop.out, /# no tool here/);
  assert.doesNotMatch(laptop.out, /did not run/);
  const ci = runWith(SKIPS, { CI: 'true' });
  assert.equal(ci.code, 1, ci.out);
  assert.match(ci.out, /CI=true: 2 test\(s\) did not run/);
  assert.match(ci.out, /: needs a tool \(skipped: no tool here\)$/m);
  assert.match(ci.out, /: needs root \(skipped: not root\)$/m);
  // With nothing skipped, CI=true changes nothing.
  const clean = runWith(`test('runs', () => {});`, { CI: 'true' });
  assert.equal(clean.code, 0, clean.out);
});

test('a test that fails after t.skip() fails the run, in CI or not (node:test alone exits 0)', () => {
  const body = `test('skips, then fails', (t) => { t.skip('no tool'); throw new Error('boom'); });`;
  const r = runWith(body, {});
  assert.equal(r.code, 1, r.out);
  assert.match(
    r.out,
    /1 test\(s\) failed after t\.skip\(\) \(a skip must return\):\n {2}\S+: skips, then fails/,
  );
});

test('TEST_RESULTS=path writes the counts of the run', () => {
  const path = join(dir, 'results.json');
  const r = runWith(SKIPS, { TEST_RESULTS: path });
  assert.equal(r.code, 0, r.out);
  const results = (
    JSON.parse(readFileSync(path, 'utf8')) as {
      tests: { ci: boolean; counts: Record<string, number>; skipped: string[]; machine: { cpus: string } };
    }
  ).tests;
  assert.match(results.machine.cpus, /^\d+ × /, 'the machine it ran on');
  assert.equal(results.ci, false);
  assert.deepEqual(
    { tests: results.counts.tests, pass: results.counts.pass, fail: results.counts.fail },
    { tests: 2, pass: 1, fail: 0 },
  );
  assert.equal(results.skipped.length, 2);
});

test('CI is on for the values CI services set, off for empty, 0 and false', () => {
  for (const v of ['true', '1', 'TRUE', 'yes']) assert.equal(ciEnabled(v), true, v);
  for (const v of [undefined, '', '0', 'false', 'False']) assert.equal(ciEnabled(v), false, String(v));
  assert.equal(describeSkip({ file: 'a.test.ts', name: 'x', skip: true }), 'a.test.ts: x (skipped)');
  assert.equal(describeSkip({ file: 'a.test.ts', name: 'x', todo: 'later' }), 'a.test.ts: x (todo: later)');
});
