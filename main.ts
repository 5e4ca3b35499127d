/**
 * securechat: argv to command. The only place that exits the process.
 * Exit status: 0 success, 1 failure (a security or runtime error, with its code),
 * 2 usage or I/O error, or a file verify cannot read (UNSUPPORTED_FORMAT).
 *
 * It loads the program only after taking SIGHUP for `serve`: SIGHUP asks a running server to
 * reload its CRL, but until some listener exists its default action ends the process, and
 * loading the program's modules takes 100–250 ms (docs/DEPLOY.md §1 "Signals").
 */
import { holdEarlyHangups } from "./commands/_early_hangups.ts";

if (import.meta.main) {
  // `deno task start -- --help` passes the `--` through: it separates the task's own
  // flags from ours, and is not an argument of securechat.
  const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
  if (args[0] === "serve") holdEarlyHangups();
  const { runProgram } = await import("./commands/program.ts");
  Deno.exit(await runProgram(args));
}
