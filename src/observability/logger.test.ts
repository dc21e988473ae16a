import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import winston from 'winston';
import { createLogger } from './logger.ts';

/** createLogger's logger with its output captured (its format kept, the console transport swapped). */
function captured(level: string) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger('test', level);
  logger.clear();
  logger.add(
    new winston.transports.Stream({
      stream: new Writable({
        write(chunk: Buffer, _enc, cb) {
          lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
          cb();
        },
      }),
    }),
  );
  return { logger, lines };
}

/** A field that counts how often it is serialized. */
function counted() {
  const field = { serialized: 0, toJSON: () => ++field.serialized };
  return field;
}

test('a message below the level is dropped before it is formatted; one at or above is written whole', () => {
  const { logger, lines } = captured('warn');
  const quiet = counted();
  const loud = counted();
  logger.child({ node: 'n1' }).info('starting helper', { field: quiet });
  logger.child({ node: 'n1' }).warn('claim lost', { field: loud });
  assert.equal(quiet.serialized, 0, 'the info line was serialized although LOG_LEVEL is warn');
  assert.equal(loud.serialized, 1);
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.message, 'claim lost');
  assert.equal(lines[0]?.level, 'warn');
  assert.equal(lines[0]?.component, 'test');
  assert.equal(lines[0]?.node, 'n1');
  assert.equal(typeof lines[0]?.timestamp, 'string');
});

test('the level is read when a message is logged: raising it lets lower messages through', () => {
  const { logger, lines } = captured('warn');
  logger.debug('before');
  logger.level = 'debug';
  logger.debug('after');
  assert.deepEqual(
    lines.map((l) => l.message),
    ['after'],
  );
});
