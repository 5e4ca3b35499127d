/**
 * securechat: argv to command. The only place that exits the process.
 * Exit status: 0 success, 1 failure (a security or runtime error, with its code),
 * 2 usage or I/O error.
 */
import { Command, CommanderError } from "commander";
import denoJson from "./deno.json" with { type: "json" };
import { registerCa } from "./commands/ca.ts";
import { registerCert } from "./commands/cert.ts";
import { registerServe } from "./commands/serve.ts";
import { registerConnect } from "./commands/connect.ts";
import { registerVerify } from "./commands/verify.ts";
import { registerPaths } from "./commands/paths.ts";
import { registerCompletion } from "./commands/completion.ts";
import { registerUser } from "./commands/user.ts";
import { exitStatusOf, helpHint, outputUsageError, printError } from "./commands/_cli.ts";

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

if (import.meta.main) {
  let status = 0;
  try {
    // `deno task start -- --help` passes the `--` through: it separates the task's own
    // flags from ours, and is not an argument of securechat.
    const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
    await buildProgram().parseAsync(args, { from: "user" });
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version arrive here with exitCode 0; usage errors are status 2.
      status = error.exitCode === 0 ? 0 : 2;
    } else {
      printError(error);
      status = exitStatusOf(error);
    }
  }
  Deno.exit(status);
}
