/**
 * The securechat program: argv to the command that runs it (main.ts loads this after it has
 * taken SIGHUP for `serve`, and exits with the status it returns).
 */
import { Command, CommanderError } from "commander";
import denoJson from "../deno.json" with { type: "json" };
import { registerCa } from "./ca.ts";
import { registerCert } from "./cert.ts";
import { registerServe } from "./serve.ts";
import { registerConnect } from "./connect.ts";
import { registerVerify } from "./verify.ts";
import { registerPaths } from "./paths.ts";
import { registerCompletion } from "./completion.ts";
import { registerUser } from "./user.ts";
import { exitStatusOf, helpHint, outputUsageError, printError } from "./_cli.ts";

export function buildProgram(): Command {
  const program = new Command("securechat")
    .description("Secure chat over plain TCP with its own PKI, signed messages and receipts.")
    .version(denoJson.version, "-V, --version")
    .exitOverride()
    .configureOutput({
      writeErr: (text) => Deno.stderr.writeSync(new TextEncoder().encode(text)),
      outputError: outputUsageError,
    });
  program.showHelpAfterError(helpHint(program));
  registerCa(program);
  registerCert(program);
  registerServe(program);
  registerConnect(program);
  registerVerify(program);
  registerUser(program);
  registerPaths(program);
  registerCompletion(program);
  return program;
}

/**
 * Runs one command line. @returns the exit status: 0 success, 1 failure (a security or runtime
 * error, with its code), 2 usage or I/O error, or a file verify cannot read
 */
export async function runProgram(args: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(args, { from: "user" });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version arrive here with exitCode 0; usage errors are status 2.
      return error.exitCode === 0 ? 0 : 2;
    }
    printError(error);
    return exitStatusOf(error);
  }
}
