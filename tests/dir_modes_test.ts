/**
 * Issue 11 item 10 through the real CLI: a directory that will hold secrets and already
 * exists with a loose mode (0755, as `git clone` or `mkdir` leave it) is tightened to
 * 0700, and the command says so; one that cannot be made private is refused.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";
import { errorCodeOf, runConnect, ServerProcess } from "../testkit/server_process.ts";

const modeOf = async (path: string) => (await Deno.stat(path)).mode! & 0o777;

async function looseDir(path: string): Promise<string> {
  await Deno.mkdir(path, { recursive: true });
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("ca init and cert issue tighten an existing 0755 certs directory to 0700", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    const certs = await looseDir(`${cwd}/certs`);
    const init = await runCli(["ca", "init", "--dir", certs, "--key-type", "ed25519"], { cwd });
    assert.equal(init.code, 0, init.stderr);
    assert.equal(await modeOf(certs), 0o700);
    assert.match(init.stderr, /was mode 0755; made it 0700/);
    await Deno.chmod(certs, 0o750);
    const issued = await runCli(
      ["cert", "issue", "alice", "--dir", certs, "--key-type", "ed25519"],
      {
        cwd,
      },
    );
    assert.equal(issued.code, 0, issued.stderr);
    assert.equal(await modeOf(certs), 0o700);
    assert.match(issued.stderr, /was mode 0750; made it 0700/);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("connect tightens its transcripts directory before it dials", async () => {
  const pki = await makePki(["alice"]);
  try {
    const transcripts = await looseDir(`${pki.dir}/transcripts`);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close(); // nothing listens there: connect fails after its local checks
    const result = await runConnect({
      port,
      user: "alice",
      password: "alice-password-1",
      pkiDir: pki.dir,
      transcripts,
    });
    assert.equal(errorCodeOf(result), "IO_ERROR", result.stderr);
    assert.equal(await modeOf(transcripts), 0o700);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test({
  name: "serve tightens its transcripts and database directories",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki([]);
    const workDir = await Deno.makeTempDir();
    const server = await ServerProcess.start({
      pkiDir: pki.dir,
      workDir,
      args: ["--db", `sqlite:${await looseDir(`${workDir}/data`)}/users.db`],
    }).catch(async (error) => {
      await Deno.remove(workDir, { recursive: true });
      throw error;
    });
    try {
      // start() passes --transcripts WORKDIR/transcripts; make it loose before serve starts
      // would race, so check the database directory here and the transcripts one below.
      assert.equal(await modeOf(`${workDir}/data`), 0o700);
    } finally {
      await server.dispose();
    }
    try {
      const transcripts = await looseDir(`${workDir}/transcripts`);
      const again = await ServerProcess.start({ pkiDir: pki.dir, workDir });
      await again.dispose();
      assert.equal(await modeOf(transcripts), 0o700);
      assert.ok(again.otherOutput.some((l) => /was mode 0755; made it 0700/.test(l)));
    } finally {
      await Deno.remove(workDir, { recursive: true });
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

Deno.test("a secrets path that is not a directory is refused, with how to fix it", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${cwd}/certs`, "not a directory");
    const init = await runCli(["ca", "init", "--dir", `${cwd}/certs`], { cwd });
    assert.equal(init.code, 2, init.stderr);
    assert.match(init.stderr, /IO_ERROR: .*certs is not a directory/);
    assert.match(init.stderr, /hint: .*chmod 700/);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
