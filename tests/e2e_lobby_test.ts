/**
 * Issue 13, the lobby under sender keys (PROTOCOL §12.5): every author's chain goes to each
 * member pairwise over the ratchets and is replaced at every membership change, so a member
 * who left — their client kept running with every key it ever got, as a modified lib would —
 * cannot open the next lobby line, and a newcomer cannot open the lines from before it came.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { codeOf } from "../lib/errors.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { logIs, pollUntil, registerUser, ServerProcess } from "../testkit/server_process.ts";

const USERS = ["alice", "bob", "carol", "dave"] as const;
const password = (user: string) => `${user}-password-123`;

async function login(pki: TestPki, server: ServerProcess, user: string): Promise<DeviceClient> {
  const mark = server.mark();
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const device = await deviceLogin(new FrameConnection(tcp), {
    pki,
    user,
    password: password(user),
    transcriptDir: join(server.workDir, `${user}-transcripts`),
  });
  // Published: from here on the server tells this device of membership changes.
  await server.waitFor(logIs("KEYS_PUBLISHED", { user }), 10_000, mark);
  return device;
}

/** The lobby line `text` from `author` as `device` shows it, once it arrived. */
function lobbyLine(device: DeviceClient, author: string, text: string) {
  return pollUntil(
    () =>
      device.received.flatMap((m) => m.type === "relay" ? [m.relayed] : []).find((r) =>
        r.author === author && !r.private && r.text === text
      ),
    15_000,
    () => `${author}'s lobby line ${JSON.stringify(text)}`,
  );
}

/** The envelope `device` received with the lobby record whose text is `text` at `reader`. */
function envelopeOf(device: DeviceClient, reader: DeviceClient, author: string, text: string) {
  const relayed = reader.received.flatMap((m) => m.type === "relay" ? [m.relayed] : [])
    .find((r) => r.author === author && r.text === text)!;
  const seen = device.envelopes.find((e) =>
    e.record.sid === relayed.record.sid && e.record.seqno === relayed.record.seqno
  );
  assert.ok(seen, `the envelope of ${JSON.stringify(text)}`);
  return seen;
}

Deno.test("e2e lobby: sender keys are replaced at each membership change — a departed member's keys open nothing after, a newcomer's nothing before", async () => {
  const pki = await makePki([...USERS], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const devices: DeviceClient[] = [];
  try {
    for (const user of USERS) await registerUser(server, pki.dir, user, password(user));
    const alice = await login(pki, server, "alice");
    const bob = await login(pki, server, "bob");
    const carol = await login(pki, server, "carol");
    devices.push(alice, bob, carol);

    // Everyone reads everyone, each lobby line wrapped once under its author's chain.
    await alice.say("first, for the three of us");
    assert.equal((await lobbyLine(bob, "alice", "first, for the three of us")).k?.length, 32);
    await lobbyLine(carol, "alice", "first, for the three of us");
    await carol.say("carol to the lobby");
    await lobbyLine(alice, "carol", "carol to the lobby");
    await lobbyLine(bob, "carol", "carol to the lobby");

    // carol leaves; her lib keeps running with every chain it was given.
    const left = server.mark();
    await carol.session.close();
    await carol.running;
    await server.waitFor(logIs("CLOSE", { user: "carol" }), 10_000, left);
    await pollUntil(
      () =>
        alice.received.find((m) =>
          m.type === "msg" && m.body.kind === "notice" &&
          m.body.text === "carol left"
        ),
      10_000,
      () => "alice hears that carol left",
    );
    await alice.say("after carol left");
    await lobbyLine(bob, "alice", "after carol left");
    const after = envelopeOf(bob, bob, "alice", "after carol left");
    const before = envelopeOf(carol, carol, "alice", "first, for the three of us");
    assert.equal(after.e2e.kind, "sender");
    assert.equal(before.e2e.kind, "sender");
    assert.notEqual(
      (after.e2e as { id: number }).id,
      (before.e2e as { id: number }).id,
      "a new chain after the change",
    );
    const departed = await carol.e2e.unwrap(after.author, after.record, after.e2e).then(
      () => "opened",
      (error) => codeOf(error),
    );
    assert.equal(departed, "DECRYPT_FAIL", "carol's keys do not open the next lobby line");

    // dave arrives; the lines from before him stay closed to his lib.
    const dave = await login(pki, server, "dave");
    devices.push(dave);
    await pollUntil(
      () =>
        alice.received.find((m) =>
          m.type === "msg" && m.body.kind === "notice" &&
          m.body.text === "dave joined"
        ),
      10_000,
      () => "alice hears that dave joined",
    );
    await alice.say("welcome dave");
    await lobbyLine(dave, "alice", "welcome dave");
    await lobbyLine(bob, "alice", "welcome dave");
    for (const earlier of [before, after]) {
      const newcomer = await dave.e2e.unwrap(earlier.author, earlier.record, earlier.e2e).then(
        () => "opened",
        (error) => codeOf(error),
      );
      assert.equal(newcomer, "DECRYPT_FAIL", "dave's keys do not open what came before him");
    }
    // And he reads what follows from bob too (bob's chain also changed when dave came).
    await bob.say("bob after dave came");
    await lobbyLine(dave, "bob", "bob after dave came");
    await lobbyLine(alice, "bob", "bob after dave came");
  } finally {
    for (const d of devices) await d.session.close().catch(() => {});
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
