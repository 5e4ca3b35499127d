/**
 * Whether received JSON text already is the canonical form of what was parsed from it, so that
 * a forwarder can copy the bytes it received instead of writing them again (docs/PERFORMANCE.md,
 * "Session 17: the server forwards what it received"). The canonical form of a parsed value is
 * `JSON.stringify(value)`: members in the order the value holds them (a shape's output holds
 * them in PROTOCOL §6.1's order), no whitespace, numbers and strings as JSON.stringify writes
 * them. Each function answers the index just past the match in `text`, or -1 for a mismatch,
 * and passes -1 on, so that a chain of them needs one test at its end.
 *
 * The matchers compare text, never make it: only a text without a backslash is matched (see
 * {@link hasNoEscape}), where every string is its characters between two quotes — as
 * JSON.stringify writes any string that needs no escape, which a string read from such a text
 * cannot need (JSON forbids raw quotes, backslashes and control characters, and strict UTF-8
 * holds no lone surrogate).
 */

/**
 * Whether the matchers may judge `text`: it has no backslash (no escape anywhere).
 */
export function hasNoEscape(text: string): boolean {
  return text.indexOf("\\") === -1;
}

/** `literal` at `at`: the index after it, or -1. */
export function literalAt(text: string, at: number, literal: string): number {
  return at >= 0 && holds(text, at, literal) ? at + literal.length : -1;
}

/**
 * Whether `text` holds `part` at `at`. A long part as a slice compared, which V8 makes a view of
 * the text and compares at memcmp's speed, where `startsWith` at a position walks it character by
 * character (~15× slower for a 160-character base64 member, Deno 2.9). A short one (member names,
 * punctuation, a `dir`) character by character: its slice would be a string of its own, made and
 * collected for each of the ~20 matches a record takes.
 */
function holds(text: string, at: number, part: string): boolean {
  const length = part.length;
  if (length > SHORT_PART) return text.slice(at, at + length) === part;
  if (at + length > text.length) return false;
  for (let i = 0; i < length; i++) {
    if (text.charCodeAt(at + i) !== part.charCodeAt(i)) return false;
  }
  return true;
}

/** Parts this long or shorter are compared character by character (holds). */
const SHORT_PART = 16;

/**
 * A safe integer at `at` as JSON.stringify writes it (`-`, then its digits without a leading
 * zero): the index after it, or -1. Read off the text, where its string would be made to compare.
 */
function integerAt(text: string, at: number, value: number): number {
  let i = at;
  if (value < 0) {
    if (text.charCodeAt(i) !== MINUS) return -1;
    i++;
  }
  let digits = 1;
  for (let rest = Math.abs(value); rest >= 10; rest = Math.floor(rest / 10)) digits++;
  const end = i + digits;
  for (let rest = Math.abs(value), j = end - 1; j >= i; j--, rest = Math.floor(rest / 10)) {
    if (text.charCodeAt(j) !== ZERO + rest % 10) return -1;
  }
  return end;
}

/**
 * `JSON.stringify(value)` at `at`, in a text {@link hasNoEscape} accepted: the index after it,
 * or -1. `value` is what JSON.parse and a shape made of the text: strings, finite numbers,
 * booleans, null, arrays and plain objects (a member whose value is undefined is not written,
 * as JSON.stringify leaves it out).
 */
export function jsonAt(text: string, at: number, value: unknown): number {
  if (at < 0) return -1;
  switch (typeof value) {
    case "string":
      return quotedAt(text, at, value);
    case "number":
      return Number.isSafeInteger(value)
        ? integerAt(text, at, value)
        : literalAt(text, at, `${value}`);
    case "boolean":
      return literalAt(text, at, value ? "true" : "false");
    case "object":
      break;
    default:
      return -1;
  }
  if (value === null) return literalAt(text, at, "null");
  if (Array.isArray(value)) {
    at = literalAt(text, at, "[");
    for (let i = 0; i < value.length; i++) {
      if (i > 0) at = literalAt(text, at, ",");
      at = jsonAt(text, at, value[i]);
    }
    return literalAt(text, at, "]");
  }
  at = literalAt(text, at, "{");
  let first = true;
  for (const name in value) {
    const member = (value as Record<string, unknown>)[name];
    if (member === undefined) continue;
    if (!first) at = literalAt(text, at, ",");
    first = false;
    at = literalAt(text, quotedAt(text, at, name), ":");
    at = jsonAt(text, at, member);
  }
  return literalAt(text, at, "}");
}

/**
 * `"<value>"` at `at`, the string there ending where `value` does: its characters are exactly
 * `value`'s (no escape: {@link hasNoEscape}), which therefore holds nothing JSON.stringify
 * would escape.
 */
function quotedAt(text: string, at: number, value: string): number {
  if (at < 0 || text.charCodeAt(at) !== QUOTE) return -1;
  const end = at + 1 + value.length;
  return text.indexOf('"', at + 1) === end && holds(text, at + 1, value) ? end + 1 : -1;
}

const QUOTE = 0x22;
const MINUS = 0x2d;
const ZERO = 0x30;
