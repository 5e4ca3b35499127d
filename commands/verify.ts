import { Command } from "commander";
import { subcommand } from "./_cli.ts";

export function registerVerify(program: Command): void {
  subcommand(program, "verify", "(not yet implemented)");
}
