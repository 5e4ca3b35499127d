/**
 * Output rules for every command (after age's tui.go): prompts go to the terminal,
 * data to stdout, diagnostics to stderr with a `securechat:` prefix in lower case,
 * plus a hint where one helps. Commands throw; main.ts alone exits.
 */
import { Command } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";

/** Status for an error thrown by a command action: usage and I/O are 2, the rest 1. */
export function exitStatusOf(error: unknown): number {
  const code = codeOf(error);
  return code === "USAGE" || code === "IO_ERROR" ? 2 : 1;
}

export function printError(error: unknown): void {
  const code = codeOf(error);
  const message = error instanceof Error ? error.message : String(error);
  const hint = error instanceof SecureChatError && error.hint ? `\nhint: ${error.hint}` : "";
  console.error(`securechat: error: ${code}: ${message}${hint}`);
}

export function info(message: string): void {
  console.error(`securechat: ${message}`);
}

/** A subcommand with the shared conventions: help on error, exit override, strict options. */
export function subcommand(parent: Command, name: string, description: string): Command {
  return parent.command(name)
    .description(description)
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .allowExcessArguments(false);
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
