/**
 * `connect --history FILE`: the user's own plaintext record of the chat. It trades
 * away what the transcript keeps (only ciphertext at rest): anyone who can read this
 * file reads the conversation. Off by default; the file is created 0600.
 */
import { SecureChatError } from "../lib/errors.ts";
import { safeJson, safeText } from "../lib/safe_text.ts";

export interface History {
  record(ts: number, author: string, text: string, to?: string): void;
  close(): Promise<void>;
}

export async function openHistory(path: string): Promise<History> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { append: true, create: true, mode: 0o600 });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot open history file ${path}`, { cause });
  }
  const encoder = new TextEncoder();
  let writing = Promise.resolve();
  return {
    record(ts, author, text, to) {
      // Read back with `cat` or `less`: nothing in it may act on a terminal (issue 11 item 1).
      const line = `${new Date(ts).toISOString()}\t${safeText(author)}${
        to ? ` -> ${safeText(to)}` : ""
      }\t${safeJson(text)}\n`;
      writing = writing.then(() => file.write(encoder.encode(line))).then(() => {});
    },
    async close() {
      await writing;
      file.close();
    },
  };
}
