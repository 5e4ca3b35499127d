/**
 * Issue 8, faults: the database going away and coming back, clients and the server killed
 * with SIGKILL at awkward moments, transcripts that cannot be written (unwritable path,
 * full disk). Each test asserts the code the server logged, what the client was told,
 * that the other sessions carried on, and that every transcript on disk still verifies
 * with `securechat verify`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "../testkit/cli.ts";
import { mysqlTestTarget, startMariaDb } from "../testkit/mariadb.ts";
import { skipMysql } from "./helpers/mariadb.ts";
import { skipUnless } from "./helpers/optional_suites.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { liveContext, startFuzzServer, terminalFor, waitForLog } from "../testkit/fuzz.ts";
import { HostileClient } from "../testkit/hostile.ts";
import {
  Bystander,
  errorCodeOf,
  LiveClient,
  type LogEvent,
  registerUser,
  runConnect,
  ServerProcess,
} from "../testkit/server_process.ts";

const PASSWORD = "a-long-password";

function userOptions(server: ServerProcess, pki: TestPki, user: string, transcripts?: string) {
  return {
    port: server.port,
    user,
    password: PASSWORD,
    pkiDir: pki.dir,
    transcripts: transcripts ?? `${server.workDir}/${user}-transcripts`,
  };
}

async function logsIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && entry.name.endsWith(".log")) out.push(join(dir, entry.name));
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return out.sort();
}

type VerifyOutcome = "confirmed" | "no-receipt" | "torn-last-line";

/**
 * `securechat verify` on one transcript: exit 0 (VALID, with or without receipts) or
 * exit 1 naming a torn final line only; anything else fails the test.
 */
async function verifyCli(log: string, ca: string): Promise<VerifyOutcome> {
  const result = await runCli(["verify", log, "--ca", ca]);
  if (result.code === 0) {
    if (/VALID, confirmed by both/.test(result.stdout)) return "confirmed";
    assert.match(result.stdout, /NONE: no receipt confirms this record/);
    assert.match(result.stdout, /VALID \(lines only: unconfirmed, no receipt\)/);
    return "no-receipt";
  }
  assert.equal(result.code, 1, `verify ${log}:\n${result.stdout}\n${result.stderr}`);
  assert.match(result.stderr, /truncated final line/, `verify ${log}:\n${result.stderr}`);
  return "torn-last-line";
}

// ------------------------------------------------------------------ database

Deno.test({
  name:
    "faults: MariaDB stopped: sessions keep chatting, new logins get DB_UNAVAILABLE; restarted: logins work",
  ignore: skipMysql(mysqlTestTarget(), "the faults database stop/restart test", "local"),
  fn: async () => {
    const db = await startMariaDb();
    const pki = await makePki(["alice", "bob", "carol"], "ed25519");
    let server: ServerProcess | undefined;
    try {
      server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--db", db.url] });
      const listen = server.logs.find((e) => e.event === "LISTEN");
      assert.match(String(listen?.db), /^mysql:\/\//);
      for (const user of ["alice", "bob", "carol"]) {
        await registerUser(server, pki.dir, user, PASSWORD);
      }
      const alice = await LiveClient.login(userOptions(server, pki, "alice"));
      const bob = await Bystander.join(server, userOptions(server, pki, "bob"));

      // The first lobby line fetches bob's end-to-end keys from the key directory, which lives
      // in the store (PROTOCOL §12.6), and sends him alice's sender key.
      await alice.send("the database is up");
      await bob.client.waitForLine((l) => l.includes("alice ✓ the database is up"));
      await db.stop();
      // Logged-in sessions with their keys exchanged never touch the store: they keep chatting.
      await alice.send("the database is down and we still talk");
      await bob.client.waitForLine((l) => l.includes("alice ✓ the database is down"));
      // A new login cannot be checked: DB_UNAVAILABLE, logged, and the client exits with it.
      const mark = server.mark();
      const refused = await runConnect(userOptions(server, pki, "carol"), ["hello?"]);
      assert.notEqual(refused.code, 0);
      assert.equal(errorCodeOf(refused), "DB_UNAVAILABLE", refused.stderr);
      const logged = await server.waitFor((e) => e.event === "DB_UNAVAILABLE", 15_000, mark);
      assert.equal(logged.user, "carol");
      await bob.ping();

      // Back up: the pool reconnects by itself, no restart of serve.
      await db.restart();
      const carol = await runConnect(userOptions(server, pki, "carol"), ["I am back"]);
      assert.equal(carol.code, 0, carol.stderr);
      await bob.client.waitForLine((l) => l.includes("carol ✓ I am back"));
      assert.equal((await alice.end()).code, 0);
      await bob.finish();
      assert.ok(!server.logs.some((e) => e.event === "INTERNAL"));
    } finally {
      await server?.dispose();
      await db.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

// ------------------------------------------------------------------ clients killed

/** A child process that runs the honest handshake up to `step`, says READY, then waits. */
async function handshakeChild(dir: string, port: number, pki: TestPki, step: string) {
  const script = join(dir, "half_handshake.ts");
  const lib = (p: string) => new URL(p, import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { HostileClient } from "${lib("../testkit/hostile.ts")}";
import { loadIdentity } from "${lib("../lib/identity.ts")}";
import { loadTrustStore } from "${lib("../lib/pki/trust_files.ts")}";
const h = await HostileClient.connect(${port}, {
  identity: await loadIdentity("${pki.dir}/alice.pem", "${pki.dir}/alice.key"),
  trust: await loadTrustStore("${pki.dir}/ca.pem"),
  username: "alice",
  password: "${PASSWORD}",
});
await h.upTo("${step}");
const local = h.conn.tcp.localAddr;
console.log("READY " + local.hostname + ":" + local.port);
setInterval(() => {}, 1000);
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      script,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  const peer = /READY (\S+)/.exec(text)?.[1];
  if (!peer) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`child did not get ready: ${text}`);
  }
  return { child, peer };
}

Deno.test("faults: a client SIGKILLed mid-handshake: the server logs the end and keeps serving", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const dir = await Deno.makeTempDir({ prefix: "securechat-faults-" });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "bob", PASSWORD);
    const bob = await Bystander.join(server, userOptions(server, pki, "bob"));
    // Before its certificate (server flight read), and after its login (auth_ok read).
    for (const step of ["certificate", "dh_client"]) {
      const mark = server.mark();
      const { child, peer } = await handshakeChild(dir, server.port, pki, step);
      child.kill("SIGKILL");
      assert.equal((await child.status).signal, "SIGKILL");
      await child.stdout.cancel().catch(() => {});
      await child.stderr.cancel().catch(() => {});
      const end = await server.waitFor(
        (e) => e.peer === peer && e.event !== "CONNECT",
        10_000,
        mark,
      );
      assert.equal(end.event, "PROTOCOL_ERROR", JSON.stringify(end));
      assert.match(
        String(end.detail),
        /peer closed the connection during the handshake|connection/,
      );
      assert.ok(!server.events((e) => e.event === "LOGIN" && e.peer === peer, mark).length);
      await bob.ping();
    }
    await bob.finish();
  } finally {
    await server.dispose();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("faults: a client SIGKILLed mid-message: CLOSE logged, others carry on, both transcripts verify", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--message-rate", "1000"] });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "bob", PASSWORD);
    const bob = await Bystander.join(server, userOptions(server, pki, "bob"));
    const mark = server.mark();
    const alice = await LiveClient.login(userOptions(server, pki, "alice"));
    const login = await server.waitFor(
      (e) => e.event === "LOGIN" && e.user === "alice",
      5000,
      mark,
    );
    // A flood of lines, killed while it is being sent.
    const flood = (async () => {
      for (let i = 1; i <= 2000; i++) await alice.send(`line ${i} ${"z".repeat(200)}`);
    })().catch(() => {}); // the pipe breaks when the process dies
    await bob.client.waitForLine((l) => l.includes("alice ✓ line 20 "), 15_000);
    alice.child.kill("SIGKILL");
    assert.equal((await alice.child.status).signal, "SIGKILL");
    await flood;
    await alice.end().catch(() => {});
    const close = await server.waitFor(
      (e) => e.event === "CLOSE" && e.session === login.session,
      10_000,
      mark,
    );
    assert.notEqual(close.outcome, "closed");
    assert.equal(close.receipt, "none");
    await bob.ping();
    // The server's record of alice's session: every line valid, no receipt.
    assert.equal(await verifyCli(String(login.transcript), `${pki.dir}/ca.pem`), "no-receipt");
    // Alice's own record: written line by line up to the kill.
    const clientLogs = await logsIn(`${server.workDir}/alice-transcripts`);
    const killed = clientLogs.filter((p) => p.includes(String(login.session)));
    assert.equal(killed.length, 1);
    const outcome = await verifyCli(killed[0], `${pki.dir}/ca.pem`);
    assert.ok(outcome === "no-receipt" || outcome === "torn-last-line", outcome);
    console.log(`alice's transcript after SIGKILL: ${outcome}`);
    await bob.finish();
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

// ------------------------------------------------------------------ server killed

Deno.test("faults: serve SIGKILLed mid-session: every transcript verifies up to its last line; restart works", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const workDir = await Deno.makeTempDir({ prefix: "securechat-faults-" });
  const ca = `${pki.dir}/ca.pem`;
  let server = await ServerProcess.start({
    pkiDir: pki.dir,
    workDir,
    args: ["--message-rate", "1000"],
  });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "bob", PASSWORD);
    const alice = await LiveClient.login(userOptions(server, pki, "alice"));
    const bob = await LiveClient.login(userOptions(server, pki, "bob"));
    const flood = (async () => {
      for (let i = 1; i <= 2000; i++) {
        await alice.send(`a${i} ${"q".repeat(300)}`);
        if (i % 10 === 0) await bob.send(`b${i}`);
      }
    })().catch(() => {});
    await bob.waitForLine((l) => l.includes("alice ✓ a50 "), 15_000);
    server.child.kill("SIGKILL");
    assert.equal((await server.stop()).signal, "SIGKILL");
    await flood;
    // The clients notice: the server went away without receipts.
    const clientErrors: string[] = [];
    for (const client of [alice, bob]) {
      const end = await client.end();
      assert.notEqual(end.code, 0);
      clientErrors.push(end.stderr.split("\n").filter((l) => l.includes("error")).join(" "));
    }
    const outcomes: Record<string, VerifyOutcome> = {};
    for (
      const dir of ["transcripts", "transcripts-clients", "alice-transcripts", "bob-transcripts"]
    ) {
      for (const log of await logsIn(join(workDir, dir))) {
        outcomes[`${dir}/${log.split("/").pop()}`] = await verifyCli(log, ca);
      }
    }
    console.log("transcripts after serve was SIGKILLed:", outcomes);
    const values = Object.values(outcomes);
    // 2 registrations (closed: confirmed) + 2 cut sessions, each on both sides.
    assert.equal(values.length, 8);
    assert.equal(values.filter((v) => v === "confirmed").length, 4);

    // Restarted on the same database: logins work again.
    server = await ServerProcess.start({ pkiDir: pki.dir, workDir });
    const again = await runConnect(userOptions(server, pki, "alice"), ["after the restart"]);
    assert.equal(again.code, 0, again.stderr);
    // Checked last so the checks above run whatever happens here: a client whose server
    // vanished must say so, not report a transcript failure of its own.
    for (const line of clientErrors) {
      assert.doesNotMatch(line, /TRANSCRIPT_IO/, "the server's death reported as TRANSCRIPT_IO");
      assert.match(line, /without receipts|PROTOCOL_ERROR|connection/);
    }
  } finally {
    await server.dispose();
    await Deno.remove(workDir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});

// ------------------------------------------------------------------ transcripts unwritable

Deno.test("faults: an unwritable --transcripts: TRANSCRIPT_IO logged and told to the client; serve stays up", async () => {
  const pki = await makePki(["alice"], "ed25519");
  const dir = await Deno.makeTempDir({ prefix: "securechat-faults-" });
  // A path under a regular file: no mkdir succeeds there, even as root.
  await Deno.writeTextFile(join(dir, "blocker"), "not a directory\n");
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    args: ["--transcripts", join(dir, "blocker", "transcripts")],
  });
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      const mark = server.mark();
      const result = await runConnect({
        ...userOptions(server, pki, "alice", join(dir, "client")),
        ...(attempt === 0 ? { registerEmail: "alice@example.com" } : {}),
      }, ["hello"]);
      const logged = await server.waitFor((e) => e.event === "TRANSCRIPT_IO", 10_000, mark);
      assert.equal(logged.user, "alice");
      assert.match(String(logged.detail), /blocker/);
      assert.notEqual(result.code, 0, "no session without a record");
      // The client must be told why by the server (a sealed error), not left with a bare
      // disconnect. (Without the server's error the client reports its own later failure,
      // e.g. "TRANSCRIPT_IO: transcript already closed" from sending after the session
      // ended: the right code by accident, so the message is what is checked.)
      assert.equal(errorCodeOf(result), "TRANSCRIPT_IO", result.stderr);
      assert.match(result.stderr, /peer ended the session: TRANSCRIPT_IO/);
    }
    assert.ok(!server.logs.some((e) => e.event === "INTERNAL"));
  } finally {
    await server.dispose();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});

/** Mounts a small tmpfs on `dir`; throws with mount's stderr when it cannot. */
function mountTmpfs(dir: string, size: string): void {
  const out = new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr).trim());
}

/** Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN), tried once at load. */
function tmpfsMissing(): string | undefined {
  const probe = Deno.makeTempDirSync({ prefix: "securechat-tmpfs-probe-" });
  try {
    mountTmpfs(probe, "64k");
    new Deno.Command("umount", { args: [probe] }).outputSync();
    return undefined;
  } catch (error) {
    return `cannot mount a tmpfs (${error instanceof Error ? error.message : error})`;
  } finally {
    Deno.removeSync(probe);
  }
}

Deno.test({
  name: "faults: a full disk: TRANSCRIPT_IO logged and told to the client, nothing crashes",
  ignore: skipUnless("tmpfs", tmpfsMissing(), "the full-disk test"),
  fn: fullDisk,
});

async function fullDisk(t: Deno.TestContext) {
  const pki = await makePki(["alice", "bob", "carol"], "ed25519");
  const dir = await Deno.makeTempDir({ prefix: "securechat-faults-" });
  const small = join(dir, "small");
  await Deno.mkdir(small);
  let server: ServerProcess | undefined;
  try {
    mountTmpfs(small, "256k");
    server = await ServerProcess.start({ pkiDir: pki.dir, args: ["--transcripts", small] });
    for (const user of ["alice", "bob", "carol"]) {
      await registerUser(server, pki.dir, user, PASSWORD);
    }
    const alice = await LiveClient.login(userOptions(server, pki, "alice"));
    // alice alone in the lobby: her lines are written to her session's transcript only. With
    // anyone else there, a relay's line in their transcript could be the first write to fail,
    // ending their session instead (as it should) and leaving alice's to end without receipts.
    // Fill the file system to the last byte.
    const filler = await Deno.open(join(small, "filler"), { write: true, create: true });
    try {
      const chunk = new Uint8Array(4096);
      while (true) await filler.write(chunk);
    } catch (error) {
      assert.ok(String(error).match(/No space|ENOSPC|os error 28/), String(error));
    } finally {
      filler.close();
    }
    await t.step(
      "the next message cannot be recorded: the sender is told TRANSCRIPT_IO",
      async () => {
        const mark = server!.mark();
        // The last partly used page of each open file still takes a few lines: keep talking.
        const aliceFull = (e: LogEvent) => e.event === "TRANSCRIPT_IO" && e.user === "alice";
        const full = () => server!.events(aliceFull, mark).length > 0;
        for (let i = 0; i < 100 && !full(); i++) {
          await alice.send(`line ${i} cannot be recorded ${"w".repeat(3000)}`).catch(() => {});
          await new Promise((resolve) => setTimeout(resolve, 30));
        }
        const logged = await server!.waitFor(aliceFull, 10_000, mark);
        assert.match(String(logged.detail), /transcript/);
        const end = await alice.end();
        assert.notEqual(end.code, 0);
        assert.match(end.stderr, /peer ended the session: TRANSCRIPT_IO/);
      },
    );
    await t.step("space back: serve still answers, a new login works", async () => {
      await Deno.remove(join(small, "filler"));
      const bob = await LiveClient.login(userOptions(server!, pki, "bob"));
      const carol = await runConnect(userOptions(server!, pki, "carol"), ["after the disk filled"]);
      assert.equal(carol.code, 0, carol.stderr);
      await bob.waitForLine((l) => l.includes("carol ✓ after the disk filled"));
      assert.equal((await bob.end()).code, 0);
      assert.ok(!server!.logs.some((e) => e.event === "INTERNAL"));
    });
  } finally {
    await server?.dispose();
    await new Deno.Command("umount", { args: [small] }).output();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
}

// ------------------------------------------------------------------ a race found by the fuzzer

Deno.test({
  name:
    "faults: a peer that disconnects while messages are relayed to it is not logged as TRANSCRIPT_IO",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const fs = await startFuzzServer(["fuzz0", "bob"]);
    try {
      const bob = await fs.login("bob");
      const ctx = await liveContext(fs, 0);
      for (let i = 0; i < 20; i++) {
        const from = fs.logs.length;
        const h = await HostileClient.connect(fs.server.port, ctx.client);
        const local = h.conn.tcp.localAddr as Deno.NetAddr;
        await h.handshake();
        // In the lobby once welcomed: bob's burst is then relayed to it.
        await h.readMsgUntil((b) => b.kind === "notice" && b.text.startsWith("welcome"));
        const burst = Array.from(
          { length: 40 },
          (_, k) => bob.session.send({ kind: "text", text: `m${i}-${k}` }),
        );
        await new Promise((resolve) => setTimeout(resolve, i % 4));
        h.close(); // gone, while the lobby is relaying bob's burst to it
        await Promise.all(burst);
        // Everything the server logs about this connection is in before the next one.
        const peer = `${local.hostname}:${local.port}`;
        const end = await waitForLog(fs.logs, terminalFor(peer), 10_000, from);
        assert.ok(end, `the server logged the end of ${peer}`);
      }
      const spurious = fs.logs.filter((e) => e.event === "TRANSCRIPT_IO");
      assert.deepEqual(
        spurious,
        [],
        "an ordinary disconnect must not raise a transcript-write alarm",
      );
      assert.equal((await bob.finish()).outcome, "closed");
    } finally {
      await fs.dispose();
    }
  },
});
