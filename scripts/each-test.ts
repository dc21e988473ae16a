/**
 * Runs every test of the given test files alone, one node process per test
 * (`node --test --test-name-pattern`), and reports which fail when run by
 * themselves: a test that passes only after another test left objects behind
 * fails here. `make each-test FILES='test/operator.test.ts ...'`.
 *
 * Test names are read from the source (`test('…'` / `it('…'` with a literal
 * name); the pattern is the escaped name anchored at its end, so a test whose
 * name ends another's is not run twice over.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node scripts/each-test.ts FILE.test.ts...');
  process.exit(2);
}

/** The literal names of test() and it() calls in `source`. */
function testNames(source: string): string[] {
  const names: string[] = [];
  const re = /\b(?:test|it)\(\s*(['"`])((?:\\.|(?!\1).)*)\1/g;
  for (const m of source.matchAll(re)) names.push((m[2] ?? '').replace(/\\(.)/g, '$1'));
  return names;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

const failed: string[] = [];
let passed = 0;
for (const file of files) {
  for (const name of testNames(readFileSync(file, 'utf8'))) {
    const t0 = performance.now();
    const r = spawnSync(
      process.execPath,
      ['--test', '--test-reporter=tap', '--test-concurrency=1', `--test-name-pattern=${escape(name)}$`, file],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    // "# pass N": exactly one test ran (and passed), so the pattern named this test and only it.
    const ran = Number(/^# tests (\d+)$/m.exec(r.stdout)?.[1] ?? 0);
    const ok = r.status === 0 && ran === 1;
    console.log(
      `${ok ? 'ok  ' : 'FAIL'} ${file}: ${name} (${secs} s${ran === 1 ? '' : `, ${ran} tests ran`})`,
    );
    if (ok) passed++;
    else {
      failed.push(`${file}: ${name}`);
      console.log(
        r.stdout
          .split('\n')
          .filter((l) => /not ok|error|expected|actual|timed out/i.test(l))
          .slice(0, 20)
          .join('\n'),
      );
    }
  }
}
console.log(
  `${passed} passed alone, ${failed.length} failed alone${failed.length ? `:\n  ${failed.join('\n  ')}` : ''}`,
);
process.exit(failed.length ? 1 : 0);
