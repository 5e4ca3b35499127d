import { Command } from "commander";
import { subcommand } from "./_cli.ts";

export function registerCa(program: Command): void {
  subcommand(program, "ca", "(not yet implemented)");
}
