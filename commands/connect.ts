import { Command } from "commander";
import { subcommand } from "./_cli.ts";

export function registerConnect(program: Command): void {
  subcommand(program, "connect", "(not yet implemented)");
}
