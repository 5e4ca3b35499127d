/**
 * Issue 17 item 1 through the real CLI: the tool has a home, so every command works
 * from any directory without path flags; SECURECHAT_HOME or the XDG directories decide
 * where; an optional config file holds repeated defaults; `--dir ./certs` still works;
 * and commands print where files went.
 */
import assert from "node:assert/strict";
import { runCli, spawnCli } from "../testkit/cli.ts";
import { pollUntil } from "../testkit/server_process.ts";

const cli = async (args: string[], env: Record<string, string>, cwd?: string, stdin?: string) => {
  const result = await runCli(args, { env, cwd, stdin });
  return result;
};

async function ok(args: string[], env: Record<string, string>, cwd?: string, stdin?: string) {
  const result = await cli(args, env, cwd, stdin);
  assert.equal(result.code, 0, `securechat ${args.join(" ")}:\n${result.stderr}`);
  return result;
}

/** `serve --port 0` with no path flag at all; resolves to [child, port]. */
async function serveFromHome(env: Record<string, string>, cwd: string) {
  const child = spawnCli(["serve", "--port", "0", "--log-format", "json"], { env, cwd });
  const lines: string[] = [];
  void (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      lines.push(...chunk.split("\n"));
    }
  })();
  void child.stderr.cancel();
  const listen = await pollUntil(
    () => lines.find((l) => l.includes('"LISTEN"')),
    20_000,
    () => lines.join("\n"),
  );
  return { child, port: Number(JSON.parse(listen).detail.split(":").pop()) };
}

Deno.test({
  name: "home: ca, cert, serve, connect and verify from another directory with no path flags",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const home = await Deno.makeTempDir({ prefix: "securechat-home-" });
    const elsewhere = await Deno.makeTempDir({ prefix: "securechat-cwd-" });
    const env = { SECURECHAT_HOME: home };
    let server: Deno.ChildProcess | undefined;
    try {
      const init = await ok(["ca", "init", "--key-type", "ed25519"], env, elsewhere);
      assert.match(init.stderr, new RegExp(`wrote ${home}/certs/ca.pem`));
      await ok(["cert", "issue", "server", "--server", "--key-type", "ed25519"], env, elsewhere);
      const issued = await ok(["cert", "issue", "alice", "--key-type", "ed25519"], env, elsewhere);
      assert.match(issued.stderr, new RegExp(`wrote ${home}/certs/alice.pem`));
      assert.match((await ok(["cert", "list"], env, elsewhere)).stdout, /alice/);

      const started = await serveFromHome(env, elsewhere);
      server = started.child;
      const session = await ok(
        [
          "connect",
          "--user",
          "alice",
          "--register",
          "--email",
          "a@example.com",
          "--port",
          String(started.port),
        ],
        { ...env, SECURECHAT_PASSWORD: "alice-password-1" },
        elsewhere,
        "hello from elsewhere\n",
      );
      const transcript = /transcript: (\S+)/.exec(session.stderr)?.[1];
      assert.ok(transcript?.startsWith(`${home}/transcripts/`), session.stderr);
      await ok(["verify", transcript!], env, elsewhere);
      assert.ok((await Deno.stat(`${home}/data/securechat.db`)).isFile);
      assert.deepEqual(
        [...Deno.readDirSync(elsewhere)],
        [],
        "nothing written to the working directory",
      );
    } finally {
      server?.kill("SIGTERM");
      await server?.status;
      await Deno.remove(home, { recursive: true });
      await Deno.remove(elsewhere, { recursive: true });
    }
  },
});

Deno.test("home: without SECURECHAT_HOME the XDG directories are used, and `paths` says so", async () => {
  const root = await Deno.makeTempDir({ prefix: "securechat-xdg-" });
  const env = {
    SECURECHAT_HOME: "",
    XDG_CONFIG_HOME: `${root}/config`,
    XDG_DATA_HOME: `${root}/data`,
  };
  try {
    await ok(["ca", "init", "--key-type", "ed25519"], env, root);
    assert.ok((await Deno.stat(`${root}/data/securechat/certs/ca.pem`)).isFile);
    const paths = await ok(["paths"], env, root);
    assert.match(paths.stdout, /home +XDG base directories/);
    assert.match(
      paths.stdout,
      new RegExp(`config +${root}/config/securechat/config.json \\(none yet\\)`),
    );
    assert.match(paths.stdout, new RegExp(`certs +${root}/data/securechat/certs`));
    assert.match(paths.stdout, new RegExp(`transcripts +${root}/data/securechat/transcripts`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("home: the config file supplies connect's user, port and paths; a flag wins; bad keys are refused", async () => {
  const home = await Deno.makeTempDir({ prefix: "securechat-home-" });
  const env = { SECURECHAT_HOME: home, SECURECHAT_PASSWORD: "x-password-123" };
  try {
    await ok(["ca", "init", "--key-type", "ed25519", "--dir", `${home}/pki`], env, home);
    await ok(
      ["cert", "issue", "carol", "--key-type", "ed25519", "--dir", `${home}/pki`],
      env,
      home,
    );
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = free.addr.port;
    free.close();
    await Deno.writeTextFile(
      `${home}/config.json`,
      JSON.stringify({ dir: "pki", connect: { user: "carol", port } }),
    );
    // Nothing listens on that port: the error names it, so the config was used — and the
    // certificate was found in the config's `dir` (else the error would be about that).
    const fromConfig = await cli(["connect"], env, home);
    assert.match(fromConfig.stderr, new RegExp(`cannot connect to 127.0.0.1:${port}`));
    const flagWins = await cli(["connect", "--port", "1"], env, home);
    assert.match(flagWins.stderr, /cannot connect to 127.0.0.1:1\b/);

    await Deno.writeTextFile(`${home}/config.json`, JSON.stringify({ connect: { prot: 1 } }));
    const bad = await cli(["connect"], env, home);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /USAGE: .*config\.json: connect: Unrecognized key/);
    await Deno.writeTextFile(`${home}/config.json`, "{ not json");
    assert.match((await cli(["paths"], env, home)).stderr, /config\.json is not valid JSON/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("home: an explicit --dir ./certs still works beside a home", async () => {
  const home = await Deno.makeTempDir({ prefix: "securechat-home-" });
  const checkout = await Deno.makeTempDir({ prefix: "securechat-checkout-" });
  try {
    const env = { SECURECHAT_HOME: home };
    await ok(["ca", "init", "--key-type", "ed25519", "--dir", "./certs"], env, checkout);
    assert.ok((await Deno.stat(`${checkout}/certs/ca.pem`)).isFile);
    await assert.rejects(Deno.stat(`${home}/certs/ca.pem`));
  } finally {
    await Deno.remove(home, { recursive: true });
    await Deno.remove(checkout, { recursive: true });
  }
});
