/**
 * The one home of typed and stored secrets on the command line: a password is typed with echo
 * off (at the terminal, or inside a chat's line editor), a new one twice and checked against
 * its rules before anything leaves the machine, or read from the first line of a file
 * (`readPasswordFile`) — never from argv, where `ps` would show it.
 */
import { SecureChatError } from "../lib/errors.ts";
import { promptHidden } from "./_tty.ts";

/** Reads one line with echo off; null when the user cancels (Ctrl-C, Ctrl-D). */
export type HiddenInput = (question: string) => Promise<string | null>;

export interface AskOptions {
  /** Where the answer is typed: the terminal by default (refused when stdin is not one). */
  input?: HiddenInput;
  /** What to do without a terminal, e.g. "pass --password-file FILE". */
  hint?: string;
}

function inputOf(options: AskOptions): HiddenInput {
  if (options.input) return options.input;
  if (!Deno.stdin.isTerminal()) {
    throw new SecureChatError("USAGE", "a password is needed but stdin is not a terminal", {
      hint: options.hint ?? "pass --password-file FILE",
    });
  }
  return promptHidden;
}

/**
 * A password typed once with echo off.
 * @throws USAGE no terminal, cancelled, or empty
 */
export async function askPassword(question: string, options: AskOptions = {}): Promise<string> {
  const password = await inputOf(options)(question);
  if (password === null) throw new SecureChatError("USAGE", "cancelled");
  if (password === "") throw new SecureChatError("USAGE", "empty password");
  return password;
}

/**
 * A new password, typed twice with echo off; `rules` (which throw INVALID_INPUT) judge the
 * first before the second is asked for, so a password that could never be accepted is
 * refused here, with what to do instead, and never sent.
 * @throws USAGE no terminal, cancelled, empty, the two differ, or the rules refuse it
 */
export async function askNewPassword(
  question: string,
  options: AskOptions & { rules?: (password: string) => void } = {},
): Promise<string> {
  const input = inputOf(options);
  const password = heldToRules(await askPassword(question, { ...options, input }), options.rules);
  if (await input("repeat it: ") !== password) {
    throw new SecureChatError("USAGE", "the passwords differ");
  }
  return password;
}

/**
 * `password`, once `rules` (which throw INVALID_INPUT) accept it: a new password however it
 * came (typed, from a file, from the environment) is judged before anything uses it.
 * @throws USAGE with the rule it breaks and `hint`
 */
export function heldToRules(
  password: string,
  rules: ((password: string) => void) | undefined,
  hint = "choose another: 8 to 1024 bytes (a passphrase of a few words is easy to type)",
): string {
  try {
    rules?.(password);
  } catch (error) {
    throw new SecureChatError("USAGE", (error as Error).message, { hint });
  }
  return password;
}

/** The password files of every command: the first line, refused when empty (lib/pki/key_files.ts). */
export { readPasswordFile } from "../lib/pki/key_files.ts";
