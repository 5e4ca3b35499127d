/**
 * `serve` and SIGHUP (a CRL reload, issue 11 item 2), whose default action ends the process:
 * a reload sent while the server starts, or while it closes its sessions with receipts, must
 * be neither a crash nor a close cut short.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, pollUntil, registerUser, ServerProcess } from "../testkit/server_process.ts";

const PASSWORD = "alice-password-1";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("serve: a SIGHUP while it starts, and one while it closes its sessions, are no crash", async () => {
  const pki = await makePki(["alice"]);
  // serve reads --key-password-file first of all it loads: from a FIFO, it waits there until
  // the test writes, so the signal surely comes while the server starts (the key is not
  // encrypted; the password is read all the same, and unused).
  const fifo = `${pki.dir}/key-password`;
  const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
  let child: Deno.ChildProcess | undefined;
  const starting = ServerProcess.start({
    pkiDir: pki.dir,
    args: ["--key-password-file", fifo],
    spawned: (spawned) => child = spawned,
  });
  starting.catch(() => {}); // its failure is awaited below, inside the try
  let server: ServerProcess | undefined;
  try {
    // Opening the FIFO's writing end returns once serve has opened its reading end.
    const writer = await Deno.open(fifo, { write: true });
    try {
      child!.kill("SIGHUP");
      await sleep(300); // delivered and handled (or fatal) while serve still waits
      await writer.write(new TextEncoder().encode("unused\n"));
    } finally {
      writer.close();
    }
    server = await starting;

    // It serves: alice registers and logs in.
    await registerUser(server, pki.dir, "alice", PASSWORD);
    const alice = await LiveClient.login({
      port: server.port,
      user: "alice",
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    });
    // alice's client is frozen, so the server's shutdown waits for her `close` (PROTOCOL §7);
    // a SIGHUP meanwhile must not end the server before the receipts are exchanged.
    alice.child.kill("SIGSTOP");
    const stopping = server.stop();
    await pollUntil(
      () => server!.otherOutput.find((l) => l.includes("shutting down")),
      10_000,
      () => `serve did not start its shutdown:\n${server!.otherOutput.join("\n")}`,
    );
    server.child.kill("SIGHUP");
    await sleep(300);
    alice.child.kill("SIGCONT");
    const status = await stopping;
    assert.equal(status.code, 0, `serve ended by signal ${status.signal}`);
    const ended = await alice.end();
    assert.equal(ended.code, 0, ended.stderr);
    assert.match(ended.stderr, /server's receipt: /);
  } finally {
    if (!server) await starting.then((s) => server = s, () => {});
    await server?.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
