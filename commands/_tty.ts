/**
 * Terminal input: hidden password prompts and a line editor that keeps the line
 * being typed intact while messages are printed above it.
 */
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function writeTty(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text));
}

/** Reads one line from the terminal with echo off. Ctrl-C or Ctrl-D abort (null). */
export async function promptHidden(question: string): Promise<string | null> {
  writeTty(question);
  Deno.stdin.setRaw(true);
  const chars: string[] = [];
  const buffer = new Uint8Array(64);
  try {
    while (true) {
      const n = await Deno.stdin.read(buffer);
      if (n === null) return null;
      for (const ch of decoder.decode(buffer.subarray(0, n))) {
        if (ch === "\r" || ch === "\n") return chars.join("");
        if (ch === "\x03" || ch === "\x04") return null;
        if (ch === "\x7f" || ch === "\b") chars.pop();
        else if (ch >= " ") chars.push(ch);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    writeTty("\n");
  }
}

/**
 * A raw-mode line editor: `print` shows output above the prompt without losing
 * what the user has typed so far.
 */
export class LineEditor {
  #line: string[] = [];
  #running = true;

  constructor(readonly prompt: string) {}

  print(text: string): void {
    writeTty(`\r\x1b[K${text}\n${this.prompt}${this.#line.join("")}`);
  }

  /** Yields each entered line; ends on Ctrl-D (empty line) or Ctrl-C. */
  async *lines(): AsyncGenerator<string> {
    Deno.stdin.setRaw(true);
    writeTty(this.prompt);
    const buffer = new Uint8Array(256);
    try {
      while (this.#running) {
        const n = await Deno.stdin.read(buffer);
        if (n === null) return;
        for (const ch of decoder.decode(buffer.subarray(0, n), { stream: true })) {
          if (ch === "\x03" || (ch === "\x04" && this.#line.length === 0)) return;
          if (ch === "\r" || ch === "\n") {
            const line = this.#line.join("");
            this.#line = [];
            writeTty(`\r\n${this.prompt}`);
            yield line;
          } else if (ch === "\x7f" || ch === "\b") {
            if (this.#line.pop() !== undefined) writeTty("\b \b");
          } else if (ch >= " ") {
            this.#line.push(ch);
            writeTty(ch);
          }
        }
      }
    } finally {
      Deno.stdin.setRaw(false);
      writeTty("\r\x1b[K");
    }
  }

  /** Ends the editor from outside (a signal, the session ending) and gives the terminal back. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    try {
      Deno.stdin.setRaw(false);
      writeTty("\r\x1b[K");
    } catch {
      // stdin is gone: nothing to restore
    }
  }
}

/** Lines of a non-terminal stdin, one at a time. */
export async function* stdinLines(): AsyncGenerator<string> {
  let pending = "";
  const textDecoder = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    pending += textDecoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, newline).replace(/\r$/, "");
      pending = pending.slice(newline + 1);
    }
  }
  if (pending) yield pending;
}
