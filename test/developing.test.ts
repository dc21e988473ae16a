/**
 * The README's "Developing" section tells developers how to run one test
 * alone: that command is run here exactly as the README writes it (taken
 * from the README, so the two cannot drift apart), and must run exactly one
 * test, which passes on its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');

test('the README’s command for one test alone runs that one test, and it passes', async () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const command = /`(node_modules\/\.bin\/node --test --test-name-pattern=[^`]+)`/.exec(readme)?.[1];
  assert.ok(command, 'the README shows a --test-name-pattern command');
  // NODE_TEST_CONTEXT would make the inner runner report to this one instead of printing.
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const out = await new Promise<string>((done, fail) =>
    execFile('bash', ['-c', command], { cwd: root, env, maxBuffer: 16 << 20 }, (err, stdout, stderr) =>
      err ? fail(new Error(`${command}: ${err.message}\n${stdout}\n${stderr}`)) : done(stdout),
    ),
  );
  assert.match(out, /^(ℹ|#) tests 1$/m, out);
  assert.match(out, /^(ℹ|#) pass 1$/m, out);
});
