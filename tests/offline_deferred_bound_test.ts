/**
 * review17 R17-4: while the server hands a member its offline queue (PROTOCOL §6.6), every live
 * relay meant for that member is held (`Member.deferred`, lib/server/lobby.ts) so that each
 * author's queued records arrive first. The delivery goes at the pace the member reads, so a
 * member that stopped reading during it made the server hold everything the lobby said meanwhile,
 * with no bound — far more than the send queue (§8.2: 1 MiB, then SLOW_CONSUMER) that bounds what
 * any other member can make it hold. Now what is held may take a few send queues (a reader on a
 * slow link holds several: tests/offline_deferred_test.ts), then the member is dropped.
 * The reproducer is review17's (tests/review17_deferred_bound_test.ts on its branch).
 */
import assert from "node:assert/strict";
import { LOBBY, userRecipient } from "../lib/message/record.ts";
import { makePki } from "../testkit/pki.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE } from "./helpers/records.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";
import { messageOf } from "./helpers/relay_wire.ts";

const PASSWORDS = { carol: "carol-password-1", bob: "bob-password-12", mallory: "mallory-pw-123" };
/** bob's offline queue: more than loopback's socket buffers take, so the delivery waits for bob. */
const STORED = 900;
/** What mallory says to the lobby while bob's delivery waits: ~8 MB of relays. */
const LIVE = 300;
const PLAINTEXT = new Uint8Array(20_000).fill(0x61);
/** bob's send queue (`--send-queue`): a quarter of the default, so that less need be said. */
const SEND_QUEUE = 262_144;
/** The relays held for a member may take this many times its send queue (lib/server/lobby.ts). */
const DEFERRED_QUEUE_FACTOR = 16;

const withE2e = (envelope: unknown) => (m: Record<string, unknown>) => {
  for (const item of m.records as Record<string, unknown>[]) {
    delete item.k;
    item.e2e = structuredClone(envelope);
  }
  return m;
};

Deno.test({
  name:
    "offline: a member that stops reading during its offline delivery is dropped SLOW_CONSUMER once the relays held for it keep 16 send queues, not held everything said (review17 R17-4)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(Object.keys(PASSWORDS), "ed25519");
    const srv = await startInProcessServer(pki, PASSWORDS, {
      lobby: { messageBurst: 100_000, messagesPerSecond: 100_000 },
      sendQueueBytes: SEND_QUEUE,
    });
    try {
      // carol fills bob's offline queue with end-to-end private lines (the queue keeps only those).
      const carol = await srv.client({ username: "carol", password: PASSWORDS.carol });
      await carol.handshake();
      for (let i = 0; i < STORED; i++) {
        await carol.sendMsg(PLAINTEXT, {
          to: userRecipient("bob"),
          message: withE2e(RATCHET_ENVELOPE),
        });
      }
      let queued = 0;
      while (queued < STORED) {
        const m = messageOf(await carol.readRecord(30_000));
        if (m.type === "queued") queued++;
        else assert.notEqual(m.type, "refused", JSON.stringify(m));
      }
      carol.close();
      // bob logs in and reads nothing more: his delivery waits for him.
      const bob = await srv.client({ username: "bob", password: PASSWORDS.bob });
      await bob.handshake();
      const mallory = await srv.client({ username: "mallory", password: PASSWORDS.mallory });
      await mallory.handshake();
      const member = (name: string) =>
        srv.server.lobby.localMembers().find((m) => m.username === name);
      for (let wait = 0; !member("bob")?.deferred && wait < 200; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(member("bob")?.deferred, "bob's offline delivery is under way");
      for (let i = 0; i < LIVE; i++) {
        await mallory.sendMsg(PLAINTEXT, { to: LOBBY, message: withE2e(SENDER_ENVELOPE) });
      }
      // Until bob's session has ended, or every line is held for him.
      for (let wait = 0; wait < 200; wait++) {
        const bobNow = member("bob");
        if (!bobNow || bobNow.session.closing || !bobNow.deferred) break;
        if (bobNow.deferred.length >= LIVE) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const bobNow = member("bob");
      assert.ok(
        bobNow === undefined || bobNow.session.closing,
        `bob's session is open and the server holds ${bobNow?.deferred?.length} relays ` +
          `(${bobNow?.deferredBytes} bytes) for him, beyond ${DEFERRED_QUEUE_FACTOR} times his ` +
          `${SEND_QUEUE}-byte send queue`,
      );
      const dropped = srv.logs.find((l) =>
        l.event === "SLOW_CONSUMER" && l.user === "bob" &&
        /held back during its offline delivery/.test(String(l.detail))
      );
      assert.ok(dropped, "bob was dropped for what was held for him");
      // Held at the drop: the bound and the relay that passed it (at most one record, 64 KiB).
      const heldBytes = Number(/(\d+) bytes held/.exec(String(dropped.detail))![1]);
      assert.ok(
        heldBytes <= DEFERRED_QUEUE_FACTOR * SEND_QUEUE + 65_536,
        `${heldBytes} bytes held`,
      );
      // The speaker's session goes on.
      const speaker = member("mallory");
      assert.ok(speaker && !speaker.session.closing, "mallory is still in session");
      bob.close();
      mallory.close();
    } finally {
      await srv.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
