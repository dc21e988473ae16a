import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BoundedOutput, DEFAULT_OUTPUT_LIMIT_BYTES } from './output.ts';

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');

void describe('BoundedOutput', () => {
  void it('keeps everything while under the limit', () => {
    const out = new BoundedOutput(DEFAULT_OUTPUT_LIMIT_BYTES);
    out.write(bytes('modprobe: FATAL: '));
    out.write(bytes('Module foo not found.\n'));
    assert.equal(out.tail(), 'modprobe: FATAL: Module foo not found.\n');
    assert.equal(out.bytes, 39);
    assert.equal(DEFAULT_OUTPUT_LIMIT_BYTES, 2048);
  });

  void it('is empty before any write', () => {
    const out = new BoundedOutput(16, 16);
    assert.equal(out.tail(), '');
    assert.equal(out.head(), '');
    assert.equal(out.bytes, 0);
  });

  void it('keeps exactly the last bytes of a large stream, whatever the chunking', () => {
    const text = Array.from({ length: 20000 }, (_, i) => `${String(i).padStart(5, '0')}\n`).join('');
    for (const chunkSize of [1, 7, 1000, 4096, text.length]) {
      const out = new BoundedOutput(2048);
      for (let i = 0; i < text.length; i += chunkSize) out.write(bytes(text.slice(i, i + chunkSize)));
      assert.equal(out.bytes, 120000, `chunk ${chunkSize}`);
      assert.equal(out.tail(), text.slice(-2048), `chunk ${chunkSize}`);
    }
  });

  void it('copies what it keeps: the caller may reuse its buffer', () => {
    const out = new BoundedOutput(8, 8);
    const buffer = bytes('abcd');
    out.write(buffer);
    buffer.fill(0x7a);
    assert.equal(out.tail(), 'abcd');
    assert.equal(out.head(), 'abcd');
  });

  void it('never starts the tail inside a multi-byte character', () => {
    const out = new BoundedOutput(5);
    out.write(bytes('ééé')); // 6 bytes: c3 a9 c3 a9 c3 a9; the last 5 start with a9.
    assert.equal(out.tail(), 'éé');
    assert.equal(out.bytes, 6);

    const emoji = new BoundedOutput(6);
    for (const byte of bytes('x🙂🙂')) emoji.write(Uint8Array.of(byte)); // 9 bytes; the last 6 start mid-emoji.
    assert.equal(emoji.tail(), '🙂');
  });

  void it('decodes invalid UTF-8 written by the helper as U+FFFD', () => {
    const out = new BoundedOutput(16);
    out.write(Uint8Array.of(0xa9, 0x61, 0xff, 0x62));
    assert.equal(out.tail(), '\ufffda\ufffdb');
  });

  void it('keeps the first bytes when asked to', () => {
    const out = new BoundedOutput(4, 10);
    out.write(bytes('setpriv: '));
    out.write(bytes('failed to execute /x'));
    assert.equal(out.head(), 'setpriv: f');
    assert.equal(out.tail(), 'e /x');
    assert.equal(out.bytes, 29);
  });

  void it('with a zero limit only counts', () => {
    const out = new BoundedOutput(0);
    out.write(bytes('hello'));
    assert.equal(out.tail(), '');
    assert.equal(out.bytes, 5);
  });

  void it('refuses a negative or fractional limit', () => {
    assert.throws(() => new BoundedOutput(-1), RangeError);
    assert.throws(() => new BoundedOutput(1.5), RangeError);
    assert.throws(() => new BoundedOutput(10, Number.NaN), RangeError);
  });
});
