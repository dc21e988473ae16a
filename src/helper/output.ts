/**
 * Bounded capture of a helper's output stream.
 *
 * A helper may print anything, in any amount; the result that goes into a
 * custom resource's status must stay small. What matters for a failed
 * modprobe is the end of its stderr (the error comes last), so we keep the
 * last N bytes and count everything. The first few bytes are kept as well:
 * when the helper never started, the only output is the privilege-dropping
 * tool's own error message, which therefore always comes first.
 */

/** Default number of trailing bytes kept per stream. */
export const DEFAULT_OUTPUT_LIMIT_BYTES = 2048;

/** A byte stream reduced to its total size, its first bytes and its last bytes. */
export class BoundedOutput {
  readonly #tailLimit: number;
  readonly #headLimit: number;
  /** Trailing chunks; together at most #tailLimit bytes plus one chunk's worth before trimming. */
  #tail: Buffer[] = [];
  #tailBytes = 0;
  #head: Buffer[] = [];
  #headBytes = 0;
  #total = 0;

  /**
   * @param tailLimit bytes kept from the end of the stream (a non-negative integer).
   * @param headLimit bytes kept from the start of the stream (default none).
   */
  constructor(tailLimit: number, headLimit = 0) {
    for (const [name, value] of [
      ['tailLimit', tailLimit],
      ['headLimit', headLimit],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
      }
    }
    this.#tailLimit = tailLimit;
    this.#headLimit = headLimit;
  }

  /** Appends a chunk. The chunk may be reused by the caller afterwards: what is kept is copied. */
  write(chunk: Uint8Array): void {
    this.#total += chunk.length;
    if (this.#headBytes < this.#headLimit) {
      const part = chunk.subarray(0, this.#headLimit - this.#headBytes);
      this.#head.push(Buffer.from(part));
      this.#headBytes += part.length;
    }
    if (this.#tailLimit === 0) return;
    const part = chunk.length > this.#tailLimit ? chunk.subarray(chunk.length - this.#tailLimit) : chunk;
    this.#tail.push(Buffer.from(part));
    this.#tailBytes += part.length;
    // Drop whole chunks that lie entirely before the last #tailLimit bytes;
    // the partial one left at the front is cut in tail().
    let first = this.#tail[0];
    while (first !== undefined && this.#tailBytes - first.length >= this.#tailLimit) {
      this.#tail.shift();
      this.#tailBytes -= first.length;
      first = this.#tail[0];
    }
  }

  /** Total bytes written, kept or not. */
  get bytes(): number {
    return this.#total;
  }

  /**
   * The last bytes (at most the tail limit) decoded as UTF-8. If the cut
   * falls inside a multi-byte character, that character's leftover
   * continuation bytes are skipped instead of decoding to U+FFFD, so the text
   * can be a few bytes shorter than the limit. Invalid UTF-8 written by the
   * helper itself decodes to U+FFFD.
   */
  tail(): string {
    const all = Buffer.concat(this.#tail);
    let start = Math.max(0, all.length - this.#tailLimit);
    if (start > 0 || this.#total > all.length) {
      // At most 3 continuation bytes (10xxxxxx) follow a UTF-8 lead byte.
      for (
        let skipped = 0;
        skipped < 3 && start < all.length && ((all[start] ?? 0) & 0xc0) === 0x80;
        skipped++
      ) {
        start++;
      }
    }
    return new TextDecoder('utf-8').decode(all.subarray(start));
  }

  /** The first bytes (at most the head limit) decoded as UTF-8. */
  head(): string {
    return new TextDecoder('utf-8').decode(Buffer.concat(this.#head));
  }
}
