/**
 * Terminal input: hidden password prompts, and the line editor of `connect` and the
 * operator console. The editor is Node's `readline` (maintained, and it works in Deno):
 * arrow keys move, Home/End, Ctrl-A/E/U/W/K, history with Up/Down (in memory only: a
 * history file would be one more plaintext copy of the chat), lines wider than the
 * terminal. Output printed while someone types goes above the prompt and the half-typed
 * line is redrawn unchanged.
 */
import * as readline from "node:readline";
import process from "node:process";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Reads one line from the terminal with echo off; the question goes to stderr so stdout
 * stays data. Ctrl-C or Ctrl-D (or end of input) abort: null.
 */
export async function promptHidden(question: string): Promise<string | null> {
  Deno.stderr.writeSync(encoder.encode(question));
  Deno.stdin.setRaw(true);
  const chars: string[] = [];
  const buffer = new Uint8Array(64);
  try {
    while (true) {
      const n = await Deno.stdin.read(buffer);
      if (n === null) return null;
      for (const ch of decoder.decode(buffer.subarray(0, n), { stream: true })) {
        if (ch === "\r" || ch === "\n") return chars.join("");
        if (ch === "\x03" || ch === "\x04") return null;
        if (ch === "\x7f" || ch === "\b") chars.pop();
        else if (ch >= " ") chars.push(ch);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(encoder.encode("\n"));
    chars.fill("");
  }
}

/** An interactive line editor on the terminal (stdin and stdout must both be one). */
/** readline's own members that a hidden question borrows for its duration. */
type Readline = readline.Interface & {
  line: string;
  cursor: number;
  history: string[];
  historySize: number;
  _writeToOutput(text: string): void;
};

export class LineEditor {
  readonly #rl: readline.Interface;
  readonly #entered: string[] = [];
  #wake?: () => void;
  #ended = false;
  /** A hidden question is waiting for its answer (askHidden). */
  #hidden?: { question: string; answer: (line: string | null) => void };

  constructor(prompt: string) {
    this.#rl = readline.createInterface({
      input: process.stdin,
      output: process.stdout,
      prompt,
      terminal: true,
      historySize: 1000,
      removeHistoryDuplicates: true,
    });
    this.#rl.on("line", (line: string) => {
      if (this.#hidden) return this.#hidden.answer(line);
      this.#entered.push(line);
      this.#wake?.();
    });
    this.#rl.on("close", () => {
      this.#ended = true;
      this.#hidden?.answer(null);
      this.#wake?.();
    });
    // Ctrl-C ends the chat cleanly (receipts exchanged), like Ctrl-D on an empty line; at a
    // hidden question it only cancels the question.
    this.#rl.on("SIGINT", () => this.#hidden ? this.#hidden.answer(null) : this.stop());
    // While a hidden question waits, nothing readline draws reaches the terminal: not the
    // keys typed, not their redraws. The question itself is written directly.
    const rl = this.#rl as Readline;
    const write = rl._writeToOutput.bind(rl);
    rl._writeToOutput = (text: string) => {
      if (!this.#hidden) write(text);
    };
  }

  /**
   * Asks `question` in the editor and reads the answer with echo off, kept out of the
   * history (a password). Ctrl-C cancels the question (null) without ending the chat;
   * Ctrl-D or the editor ending also answer null. Lines entered before the question are
   * still read in order by `lines()`; incoming lines keep printing above it. `until`
   * settling (the session ended) also answers null.
   */
  async askHidden(question: string, until?: Promise<unknown>): Promise<string | null> {
    if (this.#ended) return null;
    if (this.#hidden) throw new Error("a hidden question is already waiting");
    const rl = this.#rl as Readline;
    const historySize = rl.historySize;
    rl.historySize = 0; // readline adds nothing to the history at size 0
    const half = { line: rl.line, cursor: rl.cursor };
    rl.line = "";
    rl.cursor = 0;
    readline.cursorTo(process.stdout, 0);
    readline.clearLine(process.stdout, 0);
    process.stdout.write(question);
    try {
      return await new Promise<string | null>((answer) => {
        const hidden = { question, answer };
        this.#hidden = hidden;
        const cancel = () => this.#hidden === hidden && answer(null);
        until?.then(cancel, cancel);
      });
    } finally {
      this.#hidden = undefined;
      rl.historySize = historySize;
      rl.line = half.line;
      rl.cursor = half.cursor;
      // The Enter that answered drew nothing: end the question's row here. The prompt comes
      // back with the next read of lines().
      process.stdout.write("\n");
    }
  }

  /** What has been typed but not entered yet. */
  get pending(): string {
    return this.#ended ? "" : this.#rl.line;
  }

  /**
   * Shows `text` above the prompt and redraws the prompt with the half-typed line and the
   * cursor where they were. readline only knows how to clear what it drew itself (the
   * prompt may span several rows), so it is first asked to redraw an empty line.
   */
  print(text: string): void {
    if (this.#ended) {
      process.stdout.write(`${text}\n`);
      return;
    }
    if (this.#hidden) {
      // Above the question, which is drawn again with nothing after it: the hidden answer
      // so far shows as nothing, as it did.
      readline.cursorTo(process.stdout, 0);
      readline.clearLine(process.stdout, 0);
      process.stdout.write(`${text}\n${this.#hidden.question}`);
      return;
    }
    const rl = this.#rl as readline.Interface & { line: string; cursor: number };
    const { line, cursor } = rl;
    inOneWrite(() => {
      rl.line = "";
      rl.cursor = 0;
      rl.prompt(true);
      readline.cursorTo(process.stdout, 0);
      readline.clearLine(process.stdout, 0);
      process.stdout.write(`${text}\n`);
      rl.line = line;
      rl.cursor = cursor;
      rl.prompt(true);
    });
  }

  /** Yields each entered line; ends on Ctrl-D on an empty line, Ctrl-C or `stop()`. */
  async *lines(): AsyncGenerator<string> {
    this.#rl.prompt();
    while (true) {
      const line = this.#entered.shift();
      if (line !== undefined) {
        yield line;
        if (!this.#ended) this.#rl.prompt();
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = undefined;
    }
  }

  /** Ends the editor (a signal, the session ending) and gives the terminal back. */
  stop(): void {
    if (this.#ended) return;
    // Leave no prompt behind: redraw it empty, then clear that row.
    const rl = this.#rl as readline.Interface & { line: string; cursor: number };
    rl.line = "";
    rl.cursor = 0;
    rl.prompt(true);
    readline.cursorTo(process.stdout, 0);
    readline.clearLine(process.stdout, 0);
    this.#ended = true;
    this.#rl.close();
    this.#wake?.();
  }
}

/**
 * Runs `draw` with everything it writes to stdout sent in one write. readline clears and
 * redraws its prompt in several writes; gathered, the terminal never shows an incoming line
 * with the prompt below it still missing or half drawn.
 */
function inOneWrite(draw: () => void): void {
  type Write = (chunk: string | Uint8Array, ...rest: unknown[]) => boolean;
  const stdout = process.stdout as unknown as { write: Write };
  const write = stdout.write;
  const gathered: string[] = [];
  stdout.write = (chunk) => {
    gathered.push(typeof chunk === "string" ? chunk : decoder.decode(chunk));
    return true;
  };
  try {
    draw();
  } finally {
    stdout.write = write;
    write.call(stdout, gathered.join(""));
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
