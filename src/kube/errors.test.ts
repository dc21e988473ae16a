import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ApiException } from '@kubernetes/client-node';
import { isConflict, isGone, isNotFound, isObjectNotFound, retryAfterMs, statusCode } from './errors.ts';

const status = (code: number, details: object) =>
  JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code, details });

void describe('errors', () => {
  void it('reads the status of ApiException (code) and watch errors (statusCode)', () => {
    assert.equal(statusCode(new ApiException(409, 'conflict', '', {})), 409);
    assert.equal(statusCode(Object.assign(new Error('gone'), { statusCode: 410 })), 410);
    assert.equal(statusCode(new Error('plain')), undefined);
    assert.equal(statusCode(undefined), undefined);
    assert.ok(isConflict(new ApiException(409, '', '', {})));
    assert.ok(isGone({ statusCode: 410 }));
    assert.ok(isNotFound({ code: 404 }));
  });

  void it('tells "this object does not exist" from "this resource is not served"', () => {
    const missingObject = new ApiException(
      404,
      'nf',
      status(404, { name: 'r1', group: 'kmod.dev', kind: 'moduleruns' }),
      {},
    );
    const missingResource = new ApiException(404, 'nf', status(404, {}), {});
    assert.equal(isObjectNotFound(missingObject, 'r1'), true);
    assert.equal(isObjectNotFound(missingObject, 'r2'), false);
    assert.equal(isObjectNotFound(missingResource, 'r1'), false);
    assert.equal(isObjectNotFound(new ApiException(404, 'nf', 'not json', {}), 'r1'), false);
    assert.equal(
      isObjectNotFound({ code: 404, body: { details: { name: 'r1' } } }, 'r1'),
      true,
      'parsed bodies too',
    );
    assert.equal(isObjectNotFound(new ApiException(409, 'c', status(409, { name: 'r1' }), {}), 'r1'), false);
  });

  void it('reads Retry-After as seconds or an HTTP date, and the longest of joined errors', () => {
    const tooMany = (value?: string) =>
      new ApiException(429, 'Too Many Requests', '', value === undefined ? {} : { 'retry-after': value });
    assert.equal(retryAfterMs(tooMany('1')), 1000);
    assert.equal(retryAfterMs(tooMany(' 30 ')), 30_000);
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(retryAfterMs(tooMany('Thu, 01 Jan 2026 00:00:05 GMT'), now), 5000);
    assert.equal(retryAfterMs(tooMany('Wed, 31 Dec 2025 23:59:00 GMT'), now), 0, 'a date past is no wait');
    assert.equal(retryAfterMs(tooMany('soon')), undefined, 'neither seconds nor a date: ignored');
    assert.equal(retryAfterMs(tooMany('-1')), undefined);
    assert.equal(retryAfterMs(tooMany()), undefined);
    assert.equal(retryAfterMs(new Error('plain')), undefined);
    assert.equal(retryAfterMs(undefined), undefined);
    assert.equal(retryAfterMs(new AggregateError([new Error('x'), tooMany('2'), tooMany('1')])), 2000);
    assert.equal(retryAfterMs(new AggregateError([new Error('x')])), undefined);
  });
});
