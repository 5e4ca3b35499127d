/**
 * How lines that carry other people's text are laid out (issue 11 item 1). Every line
 * has a head we write (time, author, mark, or a log line's time and event) and a tail
 * that may hold untrusted text. The tail is passed through `safeText`, so it cannot
 * contain a line break or move the cursor; on a terminal the head is also drawn in bold
 * and long tails are wrapped by us with a hanging indent, so a tail can never begin a
 * row of the screen and no text can imitate the head of a line.
 */
import { safeText } from "../lib/safe_text.ts";

/** Where lines are going: a terminal `columns` wide, or a pipe/file (no layout). */
export interface Screen {
  terminal: boolean;
  columns: number;
  color: boolean;
}

export function screenOf(file: { isTerminal(): boolean } = Deno.stdout): Screen {
  if (!file.isTerminal()) return { terminal: false, columns: 0, color: false };
  let columns = 80;
  try {
    columns = Deno.consoleSize().columns;
  } catch {
    // not a console after all: keep the usual width
  }
  return { terminal: true, columns, color: !Deno.noColor };
}

/**
 * Columns a character may take. Over-estimating is safe (our wrap comes early); under-
 * estimating is not (the terminal would wrap first and start a row with the tail), so
 * every non-ASCII character counts as two.
 */
function widthOf(char: string): number {
  return char.charCodeAt(0) < 0x80 ? 1 : 2;
}

/** `tail` cut into rows: the first at most `firstWidth` columns, the rest `width`. */
function rowsOf(tail: string, firstWidth: number, width: number): string[] {
  const rows: string[] = [];
  let row = "";
  let used = 0;
  for (const char of tail) {
    const w = widthOf(char);
    if (used + w > (rows.length === 0 ? firstWidth : width) && row !== "") {
      rows.push(row);
      row = "";
      used = 0;
    }
    row += char;
    used += w;
  }
  rows.push(row);
  return rows;
}

/**
 * One line of output: `head` (ours, ASCII plus ✓) followed by `tail` made safe. On a
 * terminal the rows after the first are indented past the head (or by four columns
 * when the terminal is too narrow for that).
 */
export function layoutLine(screen: Screen, head: string, tail: string): string {
  if (tail === "") return screen.terminal && screen.color ? `\x1b[1m${head}\x1b[0m` : head;
  const safeTail = safeText(tail);
  if (!screen.terminal) return `${head} ${safeTail}`;
  const shownHead = screen.color ? `\x1b[1m${head}\x1b[0m` : head;
  // The head is ASCII but for one-column marks such as ✓: its length is its width.
  const headWidth = head.length + 1;
  const indent = screen.columns - headWidth >= 20 ? headWidth : 4;
  // One column spare: a row that fills the last column leaves some terminals wrapping.
  const rows = rowsOf(
    safeTail,
    Math.max(1, screen.columns - headWidth - 1),
    Math.max(1, screen.columns - indent - 1),
  );
  const [first, ...rest] = rows;
  return [`${shownHead} ${first}`, ...rest.map((row) => `${" ".repeat(indent)}${row}`)].join("\n");
}

/** `[12:01:02]`, local time. */
export function clock(ts: number): string {
  return `[${new Date(ts).toTimeString().slice(0, 8)}]`;
}
