import { Command } from "commander";
import { subcommand } from "./_cli.ts";

export function registerCert(program: Command): void {
  subcommand(program, "cert", "(not yet implemented)");
}
