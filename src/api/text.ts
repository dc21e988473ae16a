/**
 * Text that crosses the cluster boundary: what a node's helper printed (a
 * module's `install` command is any shell line a node's owner wrote), and
 * the messages built around it, end up in custom resources, Events and, via
 * `kubectl modprobe`, on an admin's terminal. Two rules, pure functions:
 *
 * - Control characters never reach a terminal as such. C0 (U+0000-U+001F),
 *   DEL (U+007F) and C1 (U+0080-U+009F) include ESC and CSI, which start
 *   the sequences that set a terminal's title, write its clipboard (OSC 52),
 *   hide text or move the cursor over what was printed. Newlines and tabs
 *   are kept: they only lay text out. The agent strips the others from what
 *   it writes (`stripControl`); the plugin prints what it reads from the
 *   cluster escaped (`escapeControl`), since anything with write access to a
 *   run's status could have put them there.
 * - Every message is bounded (`boundText`): a status field has a maximum
 *   length in its CRD, and a write over it is refused as a whole (422).
 */

/** C0 but newline and tab, DEL, C1. */
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** True when `text` holds a control character other than newline and tab. */
export function hasControl(text: string): boolean {
  CONTROL.lastIndex = 0;
  return CONTROL.test(text);
}

/** `text` without control characters other than newline and tab. */
export function stripControl(text: string): string {
  return text.replace(CONTROL, '');
}

/**
 * `text` with every control character other than newline and tab written
 * visibly: `\x1b` for C0 and DEL, `\u009b` for C1. Safe to print on a
 * terminal; a backslash stays as it is (the escape is for eyes, not parsers).
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x80
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** What `boundText` appends when it cuts. */
export const CUT_MARK = '… (cut)';

/**
 * `text` cut to at most `max` UTF-16 code units (what the API server's
 * maxLength counts for the ASCII and BMP text written here), ending in
 * CUT_MARK when cut. A surrogate pair is never split.
 */
export function boundText(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = Math.max(0, max - CUT_MARK.length);
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}${CUT_MARK}`.slice(0, max);
}

/**
 * Serialised JSON with DEL and C1 (which JSON.stringify leaves as they are)
 * written as `\u00XX` escapes: the same JSON, safe on a terminal. They can
 * occur only inside strings, where the escape means the same character.
 */
export function escapeJsonControl(json: string): string {
  return json.replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
