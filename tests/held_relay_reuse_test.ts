/**
 * A received frame's buffer is reused for the next frame once its record is handled
 * (FrameConnection.reuse, lib/session/session.ts run). Whatever the server still holds of a
 * handled record — a line held until the frames already received are read, a relay waiting for
 * its turn's end to be sealed — must have been copied out of it (receivedItems): a view of the
 * frame would read the next frame's bytes. This sends an author's lines as frames back to back in
 * one write, so that the server reads them in one turn, and checks that every relay carries its
 * own line.
 */
import assert from "node:assert/strict";
import { concat } from "../lib/bytes.ts";
import { LOBBY, type MessageRecord, sealContent, signBatch } from "../lib/message/record.ts";
import { frame, json, textsUntil, userMsgJson } from "../testkit/hostile.ts";
import { makePki } from "../testkit/pki.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";

const PASSWORDS = { mallory: "mallory-password-1", bob: "bob-password-1" };

Deno.test({
  name: "lines read in one turn from frames back to back each reach the lobby as sent",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki(Object.keys(PASSWORDS), "ed25519");
    const srv = await startInProcessServer(pki, PASSWORDS, {
      lobby: { messageBurst: 1000, messagesPerSecond: 1000 },
    });
    try {
      const bob = await srv.client({ username: "bob", password: PASSWORDS.bob });
      await bob.handshake();
      const mallory = await srv.client({ username: "mallory", password: PASSWORDS.mallory });
      await mallory.handshake();
      // Lines of a few KiB, so that the server's first read (1 KiB) comes back full and the next
      // takes every frame left at once: all of them are handled in the same turn. Each line
      // differs from the others at every offset (its number repeated), and they shrink, so that
      // each frame but the first fits the buffer given back by the one before.
      const texts = Array.from({ length: 12 }, (_, j) => `${j + 1}:`.repeat(1240 - 40 * j));
      const made = texts.map((text, j) => {
        const { k, ct, c } = sealContent({ kind: "text", text });
        const record: MessageRecord = {
          sid: mallory.sessionId!,
          dir: "c2s",
          to: LOBBY,
          seqno: 1 + j,
          ts: Date.now(),
          ct,
          c,
        };
        return { record, k };
      });
      await signBatch(mallory.opts.identity.signingKey, made.map((m) => m.record));
      // One msg (so one record and one frame) per line, in seqno order (PROTOCOL §6.3).
      const frames = made.map(({ record, k }) =>
        frame(mallory.records!.seal(json(userMsgJson([record], [k]))))
      );
      await mallory.conn.write(concat(...frames));
      const seen = await textsUntil(bob, texts.at(-1)!);
      assert.deepEqual(seen, texts);
      bob.close();
      mallory.close();
    } finally {
      await srv.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
