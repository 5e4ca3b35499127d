/**
 * Output rules for every command (after age's tui.go): prompts go to the terminal,
 * data to stdout, diagnostics to stderr with a `securechat:` prefix in lower case,
 * plus a hint where one helps. Commands throw; main.ts alone exits.
 */
import { Command } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { safeText } from "../lib/safe_text.ts";
import { describePrivateDirChange, ensurePrivateDir } from "../lib/private_dir.ts";

/** Status for an error thrown by a command action: usage, I/O and a file verify cannot read are 2, the rest 1. */
export function exitStatusOf(error: unknown): number {
  const code = codeOf(error);
  // A file of a format verify cannot read is not judged either way: not "invalid" (TRANSCRIPT §5).
  return code === "USAGE" || code === "IO_ERROR" || code === "UNSUPPORTED_FORMAT" ? 2 : 1;
}

/** Error messages may quote the peer or a file: printed through `safeText` (issue 11 item 1). */
export function printError(error: unknown): void {
  const code = codeOf(error);
  const message = safeText(error instanceof Error ? error.message : String(error));
  const hint = error instanceof SecureChatError && error.hint
    ? `\nhint: ${safeText(error.hint)}`
    : "";
  console.error(`securechat: error: ${code}: ${message}${hint}`);
}

/** One diagnostic line on stderr; `message` may quote untrusted text, so it is made safe. */
export function info(message: string): void {
  console.error(`securechat: ${safeText(message)}`);
}

/**
 * Makes `dir` owner-only before a command writes secrets into it, saying so when an
 * existing directory had to be tightened (issue 11 item 10).
 * @throws IO_ERROR when it cannot be made private (the hint says how)
 */
export async function privateDir(dir: string): Promise<void> {
  const note = describePrivateDirChange(dir, await ensurePrivateDir(dir));
  if (note) info(note);
}

/**
 * Commander's own usage errors ("unknown option", "missing required argument") in the shape of
 * ours, `securechat: error: USAGE: ...`, made safe like any quoted text (they quote argv).
 */
export function outputUsageError(text: string, write: (text: string) => void): void {
  const lines = text.trimEnd().replace(/^error: /, "error: USAGE: ").split("\n");
  write(`securechat: ${lines.map((line) => safeText(line)).join("\n")}\n`);
}

/** The hint after a usage error: where the help of `command` is. */
export function helpHint(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return `hint: run \`${names.join(" ")} --help\` for usage`;
}

/** A subcommand with the shared conventions: help on error, exit override, strict options. */
export function subcommand(parent: Command, name: string, description: string): Command {
  const command = parent.command(name)
    .description(description)
    .exitOverride()
    .allowExcessArguments(false);
  return command.showHelpAfterError(helpHint(command));
}

/** Parses a positive integer option, or throws USAGE naming the flag. */
export function positiveInt(flag: string, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n < 1 || n > max) {
      throw new SecureChatError("USAGE", `${flag} must be an integer from 1 to ${max}`);
    }
    return n;
  };
}
