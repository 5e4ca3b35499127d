/**
 * Untrusted text on a terminal (issue 11 item 1). Chat text, notices, peer error
 * messages, certificate fields and log details are other people's bytes: a CR, an
 * escape sequence, a C1 control or a bidi override in them could move the cursor, erase
 * the line above or reorder what follows, and so draw a line that looks like someone
 * else's. Every field printed anywhere goes through `safeText`, which shows such
 * characters visibly instead of letting the terminal act on them:
 *
 * - C0 controls and DEL in caret notation (`^[` for ESC, `^M` for CR, `^J` for LF, `^?`);
 * - C1 controls, bidi controls, zero-width and other invisible formatting characters,
 *   line/paragraph separators and lone surrogates as `<U+XXXX>`;
 * - a combining mark at the very start of a field as `<U+XXXX>` (it would otherwise
 *   combine with the separator printed before it).
 *
 * Kept as they are: U+FE0E/U+FE0F (text/emoji presentation) and ZWJ/ZWNJ between two
 * non-ASCII characters (emoji sequences, Indic conjuncts), where they cannot hide or
 * reorder ASCII such as a user name.
 */

/** Characters a terminal could act on or that are invisible (see the module comment). */
const UNSAFE =
  /[\p{Cc}\p{Zl}\p{Zp}\p{Cs}]|(?![\uFE0E\uFE0F])[\p{Cf}\p{Default_Ignorable_Code_Point}]|^\p{M}/gu;

const JOINERS = new Set([0x200c, 0x200d]);

function visible(char: string): string {
  const code = char.codePointAt(0)!;
  if (code < 0x20) return `^${String.fromCharCode(code + 0x40)}`;
  if (code === 0x7f) return "^?";
  return `<U+${code.toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** `text` with every character a terminal could act on, or that is invisible, made visible. */
export function safeText(text: string): string {
  return text.replace(UNSAFE, (char, offset: number, whole: string) => {
    if (JOINERS.has(char.codePointAt(0)!)) {
      const before = whole.codePointAt(offset - 1);
      const after = whole.codePointAt(offset + 1);
      const joinsNonAscii = before !== undefined && after !== undefined && before >= 0x80 &&
        after >= 0x80;
      if (joinsNonAscii) return char;
    }
    return visible(char);
  });
}

/**
 * Invisible or terminal-active characters that JSON.stringify leaves as they are. A raw
 * LF in its output is the indentation's own (strings have theirs escaped), so it stays.
 */
const UNSAFE_IN_JSON =
  /(?!\n)[\p{Cc}\p{Zl}\p{Zp}\p{Cs}\p{Cf}\p{Default_Ignorable_Code_Point}]|(?<=")\p{M}/gu;

/**
 * `JSON.stringify` whose output is also safe on a terminal: the characters `safeText`
 * would make visible are written as `\uXXXX` escapes, which parse back to the same value.
 */
export function safeJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    UNSAFE_IN_JSON,
    (char) =>
      Array.from(
        { length: char.length },
        (_, i) => `\\u${char.charCodeAt(i).toString(16).padStart(4, "0")}`,
      ).join(""),
  );
}
