import { test } from 'node:test';
import assert from 'node:assert/strict';
import { boundText, CUT_MARK, escapeControl, escapeJsonControl, hasControl, stripControl } from './text.ts';

const hostile = 'a\u001b]52;c;cm0K\u0007b\u001b]0;title\u0007c\u009b8md\re\u007ff\u0000g\nh\ti';

test('stripControl removes C0 (but newline and tab), DEL and C1', () => {
  assert.equal(stripControl(hostile), 'a]52;c;cm0Kb]0;titlec8mdefg\nh\ti');
  assert.equal(stripControl('plain ünïcode ✓'), 'plain ünïcode ✓');
});

test('escapeControl writes them visibly; newline and tab stay', () => {
  assert.equal(
    escapeControl(hostile),
    'a\\x1b]52;c;cm0K\\x07b\\x1b]0;title\\x07c\\u009b8md\\x0de\\x7ff\\x00g\nh\ti',
  );
  assert.ok(hasControl(hostile));
  assert.equal(hasControl(escapeControl(hostile)), false);
  assert.equal(hasControl('a\nb\tc'), false);
});

test('escapeJsonControl: the same JSON, with DEL and C1 as \\u escapes', () => {
  const value = { m: hostile };
  const out = escapeJsonControl(JSON.stringify(value));
  assert.equal(hasControl(out), false);
  assert.deepEqual(JSON.parse(out), value);
});

test('boundText cuts to the limit with a mark, never splitting a surrogate pair', () => {
  assert.equal(boundText('short', 10), 'short');
  const cut = boundText('x'.repeat(5000), 4096);
  assert.equal(cut.length, 4096);
  assert.ok(cut.endsWith(CUT_MARK));
  const emoji = boundText(`${'x'.repeat(10)}${'😀'.repeat(10)}`, 10 + CUT_MARK.length + 1);
  assert.equal(emoji, `${'x'.repeat(10)}${CUT_MARK}`);
});
