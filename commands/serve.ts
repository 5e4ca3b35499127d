import { Command } from "commander";
import { subcommand } from "./_cli.ts";

export function registerServe(program: Command): void {
  subcommand(program, "serve", "(not yet implemented)");
}
