/**
 * Issue 17 item 8: `securechat completion bash|zsh|fish` prints a script made from the
 * command tree; bash really completes subcommands and flags with it.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";

async function complete(script: string, words: string[]): Promise<string[]> {
  const program = `${script}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}
_securechat; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const out = await new Deno.Command("bash", { args: ["-c", program], stdout: "piped" }).output();
  assert.ok(out.success);
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean);
}

Deno.test("completion bash: subcommands, nested subcommands and flags complete", async () => {
  const result = await runCli(["completion", "bash"]);
  assert.equal(result.code, 0, result.stderr);
  const script = result.stdout;
  assert.deepEqual(await complete(script, ["securechat", "ce"]), ["cert"]);
  assert.deepEqual(
    (await complete(script, ["securechat", "cert", ""])).sort(),
    ["--help", "crl", "export", "issue", "list", "revoke", "show"],
  );
  assert.deepEqual(await complete(script, ["securechat", "cert", "issue", "--ser"]), ["--server"]);
  assert.deepEqual(await complete(script, ["securechat", "connect", "--us"]), ["--user"]);
  assert.deepEqual(await complete(script, ["securechat", "completion", "f"]), ["fish"]);
});

Deno.test("completion zsh and fish print scripts; an unknown shell is a usage error", async () => {
  const zsh = await runCli(["completion", "zsh"]);
  assert.equal(zsh.code, 0, zsh.stderr);
  assert.match(zsh.stdout, /bashcompinit/);
  assert.match(zsh.stdout, /complete -o default -F _securechat securechat/);
  const fish = await runCli(["completion", "fish"]);
  assert.equal(fish.code, 0, fish.stderr);
  assert.match(
    fish.stdout,
    /complete -c securechat -n '__fish_seen_subcommand_from connect' -l user -s u/,
  );
  assert.match(fish.stdout, /complete -c securechat -f -n '__fish_use_subcommand' -a verify/);
  const bad = await runCli(["completion", "tcsh"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /use bash, zsh or fish/);
});
