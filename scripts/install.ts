/**
 * `deno task install`: puts a `securechat` command in `$DENO_INSTALL_ROOT/bin` (default
 * `~/.deno/bin`) that runs this checkout's main.ts with the permissions of `deno task
 * start`. Unlike `deno install -g`, whose shim runs whatever `deno` is on PATH, this one
 * records the deno that ran the install: after `npx -y deno@2.9.6 task install` there
 * is no `deno` on PATH, and the command must still work (issue 17 item 4). It falls back
 * to a `deno` on PATH if the recorded one has gone (an npx cache cleaned).
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readStartTask } from "../testkit/start_task.ts";

const checkout = dirname(dirname(fileURLToPath(import.meta.url)));
const config = join(checkout, "deno.json");
const main = join(checkout, "main.ts");

const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

const home = Deno.env.get("HOME");
const root = Deno.env.get("DENO_INSTALL_ROOT") || (home ? join(home, ".deno") : undefined);
if (!root) {
  console.error("securechat install: set DENO_INSTALL_ROOT (HOME is not set)");
  Deno.exit(2);
}
const bin = join(root, "bin");
const target = join(bin, "securechat");
const deno = Deno.execPath();
// The flags of the `start` task: one list for both (testkit/start_task.ts).
const run = [
  "run",
  "--quiet",
  "--no-prompt",
  ...await readStartTask(config),
  "--config",
  config,
  main,
];

const shim = `#!/bin/sh
# securechat, installed by \`deno task install\` from ${checkout}
# serve takes SIGHUP as a CRL reload, but until deno has loaded it SIGHUP's default action would
# end it: it starts with SIGHUP ignored, which its own handler then replaces (docs/DEPLOY.md §1).
case "\${1-}" in serve) trap '' HUP ;; esac
deno=${quote(deno)}
if [ ! -x "$deno" ]; then
  deno=$(command -v deno) || {
    echo "securechat: deno not found (it was ${deno.replaceAll('"', "")});" \\
      "reinstall with: npx -y deno@${Deno.version.deno} task install" >&2
    exit 127
  }
fi
exec "$deno" ${run.map(quote).join(" ")} "$@"
`;

await Deno.mkdir(bin, { recursive: true });
await Deno.writeTextFile(target, shim, { mode: 0o755 });
await Deno.chmod(target, 0o755);
console.log(`securechat: installed ${target} (runs ${main} with ${deno})`);
const onPath = (Deno.env.get("PATH") ?? "").split(":").includes(bin);
if (!onPath) console.log(`securechat: add ${bin} to your PATH, e.g. export PATH="${bin}:$PATH"`);
