import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryLogger } from './logs.ts';

void describe('memoryLogger', () => {
  void it('records entries with their fields', () => {
    const { logger, entries } = memoryLogger();
    logger.debug('one', { a: 1 });
    logger.child({ c: 'x' }).warn('two');
    assert.deepEqual(
      entries.map((e) => [e.level, e.message, e.a ?? e.c]),
      [
        ['debug', 'one', 1],
        ['warn', 'two', 'x'],
      ],
    );
  });
});
