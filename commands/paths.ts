/** `securechat paths`: where files go when no flag says (issue 17 item 1). */
import { Command } from "commander";
import { CONFIG_HELP, loadSettings } from "./_home.ts";
import { subcommand } from "./_cli.ts";
import { safeText } from "../lib/safe_text.ts";

export function registerPaths(program: Command): void {
  subcommand(program, "paths", "Show where certificates, transcripts and the database go.")
    .addHelpText(
      "after",
      `
The home is $SECURECHAT_HOME if set (config.json, certs/, transcripts/,
data/securechat.db under it), else the XDG base directories: config.json in
$XDG_CONFIG_HOME/securechat (~/.config/securechat), the rest in
$XDG_DATA_HOME/securechat (~/.local/share/securechat).

${CONFIG_HELP}`,
    )
    .action(async () => {
      const settings = await loadSettings();
      const rows: [string, string][] = [
        ["home", settings.home.source],
        ["config", `${settings.home.configFile}${settings.configFound ? "" : " (none yet)"}`],
        ["certs", settings.certs],
        ["transcripts", settings.transcripts],
        ["database", settings.config.serve?.db ?? `sqlite:${settings.home.database}`],
      ];
      for (const [name, value] of rows) console.log(`${name.padEnd(12)}${safeText(value)}`);
    });
}
