/**
 * Issue 17 item 4: the README's install path on a machine where `deno` is not on PATH
 * (the quickstart runs it through npx). `deno task install` into a temporary
 * DENO_INSTALL_ROOT, then the installed `securechat` answers --help and runs a real
 * command with PATH holding no deno at all; `deno task start -- --help` works too.
 */
import assert from "node:assert/strict";
import { parseStartTask } from "../testkit/start_task.ts";

const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const decoder = new TextDecoder();
const tasks = JSON.parse(await Deno.readTextFile(CONFIG)).tasks as Record<string, string>;

async function run(cmd: string, args: string[], env: Record<string, string>, clearEnv = false) {
  const out = await new Deno.Command(cmd, { args, env, clearEnv, stdout: "piped", stderr: "piped" })
    .output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("deno task install: the installed securechat works with no deno on PATH", async () => {
  const root = await Deno.makeTempDir({ prefix: "securechat-install-" });
  try {
    const installed = await run(Deno.execPath(), ["task", "--config", CONFIG, "install"], {
      DENO_INSTALL_ROOT: root,
    });
    assert.equal(installed.code, 0, installed.stderr);
    const shim = `${root}/bin/securechat`;
    assert.equal((await Deno.stat(shim)).mode! & 0o111, 0o111, "executable");
    // The start task's flags (permissions, any V8 settings) ride along (testkit/start_task.ts).
    const text = await Deno.readTextFile(shim);
    const startFlags = parseStartTask(tasks.start);
    assert.ok(startFlags.length > 0);
    for (const flag of startFlags) assert.ok(text.includes(` '${flag}'`), `${flag} in the shim`);

    // Only what a login shell without deno would have: no deno anywhere on PATH.
    const env: Record<string, string> = {
      PATH: "/nonexistent",
      SECURECHAT_HOME: `${root}/home`,
      ...(Deno.env.get("HOME") ? { HOME: Deno.env.get("HOME")! } : {}),
      ...(Deno.env.get("DENO_DIR") ? { DENO_DIR: Deno.env.get("DENO_DIR")! } : {}),
    };
    const help = await run(shim, ["--help"], env, true);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage: securechat/);
    const init = await run(shim, ["ca", "init", "--key-type", "ed25519"], env, true);
    assert.equal(init.code, 0, init.stderr);
    assert.ok((await Deno.stat(`${root}/home/certs/ca.pem`)).isFile);
    const paths = await run(shim, ["paths"], env, true);
    assert.match(paths.stdout, new RegExp(`certs +${root}/home/certs`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("deno task start -- --help prints the usage", async () => {
  const home = await Deno.makeTempDir({ prefix: "securechat-home-" });
  try {
    const started = await run(Deno.execPath(), [
      "task",
      "--config",
      CONFIG,
      "start",
      "--",
      "--help",
    ], {
      SECURECHAT_HOME: home,
    });
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, /Usage: securechat/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("parseStartTask() gives the flags between deno run and main.ts, and refuses any other shape", () => {
  assert.deepEqual(parseStartTask("deno run --v8-flags=--y --allow-net main.ts"), [
    "--v8-flags=--y",
    "--allow-net",
  ]);
  assert.deepEqual(parseStartTask("deno run main.ts"), []);
  for (
    const bad of [
      "node main.ts",
      "A=1 deno run main.ts",
      "deno test main.ts",
      "deno run main.ts --x",
    ]
  ) {
    assert.throws(() => parseStartTask(bad), /unexpected start task/, bad);
  }
});

Deno.test("deno task compile builds with the start task's flags: the binary runs as `securechat` does", () => {
  // deno compile [--config C] [--include P]... <the start task's flags> --output NAME main.ts
  const words = tasks.compile.slice(tasks.compile.indexOf("deno compile")).trim().split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "compile"]);
  assert.equal(words.at(-1), "main.ts");
  const flags: string[] = [];
  for (let i = 2; i < words.length - 1; i++) {
    if (["--config", "--include", "--output"].includes(words[i])) i++; // and its value
    else flags.push(words[i]);
  }
  assert.deepEqual(flags, parseStartTask(tasks.start));
});
