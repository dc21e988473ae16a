/**
 * The README's figures are true to their results files: every row of its
 * Benchmarks table that states a number names, in its last column, the
 * committed results file(s) a documented command wrote it to, and every
 * number of the row's figure is in one of them (as written there, or rounded
 * to the digits the README shows). A figure that was not measured into a file,
 * or went stale when the file was written again, fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');

/** The rows of the first Markdown table after `heading`, as cells (header and separator left out). */
export function tableAfter(markdown: string, heading: string): string[][] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  assert.ok(start >= 0, `no heading "${heading}"`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith('#')) break;
    if (!line.startsWith('|')) {
      if (rows.length > 0) break;
      continue;
    }
    rows.push(splitRow(line));
  }
  return rows.slice(2);
}

/** The cells of a Markdown table row; a `|` inside backticks does not end a cell. */
function splitRow(line: string): string[] {
  const cells: string[] = [];
  let cell = '';
  let code = false;
  for (const ch of line.trim().slice(1, -1)) {
    if (ch === '`') code = !code;
    if (ch === '|' && !code) {
      cells.push(cell.trim());
      cell = '';
    } else cell += ch;
  }
  cells.push(cell.trim());
  return cells;
}

/** The numbers a figure states, as written ("1,000" → "1000"), leaving out names such as p50 or v24. */
export function numbersIn(figure: string): string[] {
  return [
    ...figure.matchAll(/(?<![\w.,-])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.,-])\d+(?:\.\d+)?(?![\w])/g),
  ].map((m) => m[0].replaceAll(',', ''));
}

/** Every number in a JSON value, however deep. */
function numbersOf(value: unknown): number[] {
  if (typeof value === 'number') return [value];
  if (Array.isArray(value)) return value.flatMap(numbersOf);
  if (value && typeof value === 'object') return Object.values(value).flatMap(numbersOf);
  return [];
}

/** Whether `shown` (as the README writes it) is one of the file's numbers, rounded to the digits shown. */
export function holds(numbers: number[], shown: string): boolean {
  const decimals = shown.includes('.') ? shown.length - shown.indexOf('.') - 1 : 0;
  const want = Number(shown);
  return numbers.some((x) => Math.abs(Number(x.toFixed(decimals)) - want) < 1e-9);
}

test('every number of the README Benchmarks table is in the committed results file its row names', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const rows = tableAfter(readme, '## Benchmarks');
  assert.ok(rows.length >= 5, `the Benchmarks table has its rows (${rows.length})`);
  let checked = 0;
  for (const [what = '', figure = '', files = ''] of rows) {
    const numbers = numbersIn(figure);
    if (numbers.length === 0) continue;
    const paths = [...files.matchAll(/`([^`]+\.json)`/g)].map((m) => m[1] ?? '');
    assert.ok(paths.length > 0, `"${what}" states figures but names no results file`);
    const values: number[] = [];
    for (const path of paths) {
      assert.ok(existsSync(join(root, path)), `"${what}": ${path} does not exist`);
      values.push(...numbersOf(JSON.parse(readFileSync(join(root, path), 'utf8'))));
    }
    for (const n of numbers) {
      assert.ok(holds(values, n), `"${what}": ${n} is in none of ${paths.join(', ')}`);
      checked++;
    }
  }
  assert.ok(checked > 30, `${checked} figures checked`);
});

test('the checks above can fail: a stale figure, a number in no file, a row without a file', () => {
  assert.deepEqual(
    numbersIn('all Succeeded in 8.56 s (ideal 4 s: ×2.14), p50 7.05 s over 1,000 nodes; v24'),
    ['8.56', '4', '2.14', '7.05', '1000'],
  );
  assert.equal(holds([8.557, 4], '8.56'), true, 'rounded to the digits shown');
  assert.equal(holds([13.42], '8.56'), false, 'a stale figure');
  assert.equal(holds([223.6], '224'), true);
  assert.equal(holds([223.6], '224.0'), false);
  const rows = tableAfter(
    [
      '## Benchmarks',
      '',
      '| a | b | c |',
      '| - | - | - |',
      '| x `a|b` | 1 s | `f.json` |',
      '',
      '## Next',
    ].join('\n'),
    '## Benchmarks',
  );
  assert.deepEqual(rows, [['x `a|b`', '1 s', '`f.json`']]);
});
