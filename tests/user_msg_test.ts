/**
 * A user's msg carrying several records (PROTOCOL §6.3) against a real server in this
 * process. Nothing of a msg is acted on unless every record passes (a lobby line before a record
 * that ends the session reaches no one), and the message rate counts records, not msgs (§8.2).
 */
import assert from "node:assert/strict";
import { fromBase64 } from "../lib/bytes.ts";
import {
  type Body,
  decodeRecord,
  LOBBY,
  type MessageRecord,
  openContent,
  TO_SERVER,
  userRecipient,
} from "../lib/message/record.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import { ChatSession, type E2eHooks, type ReceivedMessage } from "../lib/session/session.ts";
import { codeOf } from "../lib/errors.ts";
import { MAX_CONTENT_BYTES } from "../lib/handshake/record.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE, unownedPublish } from "./helpers/records.ts";
import { HostileClient, json, signedUserMsgJson, textsUntil } from "../testkit/hostile.ts";
import type { KeyType } from "../lib/pki/keys.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { type InProcessServer, startInProcessServer } from "./helpers/in_process_server.ts";
import { encodeRelay, isBinaryRelay, messageOf } from "./helpers/relay_wire.ts";

const PASSWORDS = { mallory: "mallory-password-1", bob: "bob-password-1", carol: "carol-pw-123" };

async function withServer(
  fn: (srv: InProcessServer, pki: TestPki) => Promise<void>,
  lobby?: { messageBurst: number; messagesPerSecond: number },
  keyType: KeyType = "ed25519",
) {
  const pki = await makePki(Object.keys(PASSWORDS), keyType);
  const srv = await startInProcessServer(pki, PASSWORDS, lobby ? { lobby } : {});
  try {
    await fn(srv, pki);
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
}

async function login(srv: InProcessServer, username: keyof typeof PASSWORDS) {
  const h = await srv.client({ username, password: PASSWORDS[username] });
  await h.handshake();
  return h;
}

const text = (t: string): Body => ({ kind: "text", text: t });

/**
 * `name` logged in with the real client (lib/session: it checks everything the server sends),
 * with `e2e` as its end-to-end layer if given; its transcripts go to `dir`, which the caller
 * removes.
 */
async function realSession(
  srv: InProcessServer,
  pki: TestPki,
  name: keyof typeof PASSWORDS,
  e2e?: E2eHooks,
): Promise<{ chat: ChatSession; dir: string }> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: srv.server.port });
  const est = await clientHandshake(new FrameConnection(tcp), {
    identity: await pki.identity(name),
    trust: pki.trust,
    serverName: "localhost",
    credentials: { mode: "login", username: name, password: PASSWORDS[name] },
    timeoutMs: 20_000,
  });
  const dir = await Deno.makeTempDir({ prefix: `user-msg-${name}-` });
  try {
    const transcripts = transcriptDirectory(dir);
    const chat = await ChatSession.start(est, { transcripts, relayTrust: pki.trust, e2e });
    return { chat, dir };
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
}

for (const keyType of ["ed25519", "rsa2048"] as const) {
  Deno.test({
    name:
      `a lobby line in the same msg as a record that ends the session reaches no one (PROTOCOL §6.3), ${keyType}`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      await withServer(
        async (srv) => {
          const bob = await login(srv, "bob");
          const carol = await login(srv, "carol");
          const cases: { name: string; bad: { body: Body; to: string } }[] = [
            { name: "another user's bundle", bad: { body: unownedPublish("bob"), to: TO_SERVER } },
            {
              name: "a who to the lobby",
              bad: { body: { kind: "who" } as Body, to: LOBBY },
            },
          ];
          let carolSeqno = 0;
          for (const { name, bad } of cases) {
            const mallory = await login(srv, "mallory");
            await mallory.sendSealed(
              json(
                await signedUserMsgJson(mallory, 1, [
                  { body: text(`leak: ${name}`), to: LOBBY },
                  bad,
                ]),
              ),
            );
            const end = await mallory.expectEnd();
            assert.equal(end.code, "PROTOCOL_ERROR", name);
            // carol's line leaves after mallory's session ended: a relay of mallory's line, had it
            // been made, is before it in bob's session.
            const marker = `marker after ${name}`;
            await carol.sendSealed(
              json(
                await signedUserMsgJson(carol, ++carolSeqno, [{ body: text(marker), to: LOBBY }]),
              ),
            );
            const seen = await textsUntil(bob, marker);
            assert.deepEqual(seen.filter((t) => t.startsWith("leak")), [], name);
          }
          bob.close();
          carol.close();
        },
        undefined,
        keyType,
      );
    },
  });
}

Deno.test({
  name: "the message rate counts a msg's records, each refused with its own of (§8.2, §6.5)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv) => {
      const bob = await login(srv, "bob");
      const mallory = await login(srv, "mallory");
      const lines = Array.from(
        { length: 8 },
        (_, j) => ({ body: text(`line ${j + 1}`), to: LOBBY }),
      );
      await mallory.sendSealed(json(await signedUserMsgJson(mallory, 1, lines)));
      const refused: number[] = [];
      while (refused.length < 5) {
        const m = messageOf(await mallory.readRecord(20_000));
        if (m.type === "refused") {
          assert.equal(m.code, "RATE_LIMITED");
          refused.push(m.of);
        }
      }
      assert.deepEqual(refused, [4, 5, 6, 7, 8]);
      const seen = await textsUntil(bob, "line 3");
      assert.deepEqual(seen.filter((t) => t.startsWith("line")), ["line 1", "line 2", "line 3"]);
      bob.close();
      mallory.close();
    }, { messageBurst: 3, messagesPerSecond: 0.001 });
  },
});

Deno.test({
  name:
    "a private record stored from the middle of a msg reaches its offline recipient with a path that verifies (PROTOCOL §6.6 4')",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv, pki) => {
      const mallory = await login(srv, "mallory");
      // A batch of 5 in one msg, bob's private record at index 2: its path is
      // [leaf 3, MTH(0..2), leaf 4], derived by the server from the msg (§6.4 "Making the proof").
      const msg = await signedUserMsgJson(
        mallory,
        1,
        [1, 2, 3, 4, 5].map((j) => ({
          body: text(`line ${j}`),
          to: j === 3 ? userRecipient("bob") : LOBBY,
        })),
      );
      const items = msg.records as Record<string, unknown>[];
      const { k: _k, ...bare } = items[2];
      items[2] = { ...bare, e2e: RATCHET_ENVELOPE };
      await mallory.sendSealed(json(msg));
      while (true) {
        const m = messageOf(await mallory.readRecord(20_000));
        if (m.type === "refused") assert.fail(`refused ${m.of}: ${m.code}`);
        if (m.type === "queued") {
          assert.equal(m.of, 3);
          break;
        }
      }
      mallory.close();
      // bob logs in with the real client: it checks the stored record (§6.6 4') with its path.
      const { chat, dir } = await realSession(srv, pki, "bob");
      try {
        const stored = Promise.withResolvers<ReceivedMessage>();
        const running = chat.run({
          onMessage: (m) => {
            if (m.type === "relay" && m.relayed.stored) stored.resolve(m);
          },
        });
        let guard: ReturnType<typeof setTimeout> | undefined;
        const got = await Promise.race([
          stored.promise,
          running.then((end) => assert.fail(`bob's session ended: ${JSON.stringify(end)}`)),
          // Not a measure of speed: a hang guard, so that a lost record fails with a reason.
          new Promise<never>((_, reject) => {
            guard = setTimeout(() => reject(new Error("no stored record in 60 s")), 60_000);
          }),
        ]).finally(() => clearTimeout(guard));
        assert.equal(got.type, "relay");
        if (got.type === "relay") {
          assert.equal(got.relayed.record.seqno, 3);
          assert.equal(got.relayed.record.batch?.n, 5);
          assert.equal(got.relayed.record.batch?.path.length, 3);
        }
        await chat.close();
        assert.equal((await running).outcome, "closed");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});

/** A logged-in real client (it checks every relay, PROTOCOL §6.4) whose texts are collected. */
async function realClient(srv: InProcessServer, pki: TestPki, name: keyof typeof PASSWORDS) {
  const { chat, dir } = await realSession(srv, pki, name);
  const texts: string[] = [];
  let wake = () => {};
  const running = chat.run({
    onMessage: (m) => {
      if (m.type === "relay") texts.push(m.relayed.text);
      wake();
    },
  });
  /** Resolves once `count` relayed texts arrived; fails with the reason if the session ends. */
  const waitFor = async (count: number) => {
    while (texts.length < count) {
      await Promise.race([
        new Promise<void>((resolve) => (wake = resolve)),
        running.then((end) => assert.fail(`${name}'s session ended: ${JSON.stringify(end)}`)),
      ]);
    }
    return texts;
  };
  const done = async () => {
    await chat.close();
    const end = await running;
    await Deno.remove(dir, { recursive: true });
    return end;
  };
  return { waitFor, done };
}

Deno.test({
  name:
    "live relays of part of a msg (a private record to another between lobby lines) verify at real clients (PROTOCOL §6.4 'Making the proof')",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv, pki) => {
      const bob = await realClient(srv, pki, "bob");
      const carol = await realClient(srv, pki, "carol");
      const mallory = await login(srv, "mallory");
      const parts = [1, 2, 3, 4, 5].map((j) => ({
        body: text(`line ${j}`),
        to: j === 3 ? userRecipient("carol") : LOBBY,
      }));
      await mallory.sendSealed(json(await signedUserMsgJson(mallory, 1, parts)));
      // bob: records 1, 2, 4, 5 in one relay, whose proof holds record 3's leaf (not the msg's).
      assert.deepEqual(await bob.waitFor(4), ["line 1", "line 2", "line 4", "line 5"]);
      // carol: all five, the msg's own proof.
      assert.deepEqual(await carol.waitFor(5), parts.map((p) => (p.body as { text: string }).text));
      mallory.close();
      assert.equal((await bob.done()).outcome, "closed");
      assert.equal((await carol.done()).outcome, "closed");
    });
  },
});

Deno.test({
  name:
    "a real client's batch too large for one msg leaves in several, each checked by the server and relayed; receipts agree at close",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv, pki) => {
      const bob = await realClient(srv, pki, "bob");
      const { chat, dir } = await realSession(srv, pki, "mallory");
      try {
        const running = chat.run({ onMessage: () => {} });
        // 10 lines of 3000 units each written \u0001 (18 KB of body each): a batch of 10 that
        // no single msg holds, sent without waiting (one batch, PROTOCOL §6.1).
        const lines = Array.from({ length: 10 }, (_, j) => `${j}:` + "\u0001".repeat(2998));
        await Promise.all(lines.map((t) => chat.send({ kind: "text", text: t })));
        assert.deepEqual(await bob.waitFor(10), lines);
        await chat.close();
        const end = await running;
        assert.equal(end.outcome, "closed", JSON.stringify(end));
        const log = (await Deno.readTextFile(end.transcriptPath!)).split("\n");
        const msgs = log.filter((l) => l.startsWith('{"dir":"c2s"')).map((l) => JSON.parse(l));
        assert.ok(msgs.length > 1, `the batch left in ${msgs.length} msg(s)`);
        assert.ok(msgs.every((m) => m.n === msgs[0].n && m.first === msgs[0].first));
        const report = await verifyTranscript(end.transcriptPath!, { trust: pki.trust });
        assert.equal(report.ok, true, report.reason ?? "");
        assert.deepEqual(report.confirmedBy, ["client", "server"]);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      assert.equal((await bob.done()).outcome, "closed");
    });
  },
});

Deno.test({
  name:
    "a record that fails mid-batch (no end-to-end envelope) ends the session, and the batch's records before it leave as a msg with their proof",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv, pki) => {
      const bob = await login(srv, "bob");
      // An end-to-end layer that has keys for the lobby, none for carol.
      const { chat, dir } = await realSession(srv, pki, "mallory", {
        wrap: (record: MessageRecord) =>
          Promise.resolve(record.to === LOBBY ? SENDER_ENVELOPE : undefined),
        unwrap: () => Promise.resolve(undefined),
        save: () => Promise.resolve(),
        onSenderKey: () => {},
      } as unknown as E2eHooks);
      try {
        const running = chat.run({ onMessage: () => {} });
        const sends = [
          chat.send(text("one")),
          chat.send(text("two")),
          chat.send(text("three"), userRecipient("carol")),
          chat.send(text("four")),
        ].map((p) => p.then(() => "sent", codeOf));
        const outcomes = await Promise.all(sends);
        assert.deepEqual(outcomes.slice(0, 3), ["sent", "sent", "NO_E2E_KEYS"]);
        assert.notEqual(outcomes[3], "sent");
        const end = await running;
        assert.equal(end.outcome, "error");
        // Records 1 and 2 of the batch of 4 reached bob in one relay, their proof checked
        // by the server (§6.3 step 4): first 1, n 4, one proof entry (records 3 and 4's subtree).
        const relay = await firstRelay(bob);
        assert.deepEqual(
          [relay.first, relay.n, relay.proof.length, relay.records.length],
          [1, 4, 1, 2],
        );
        const log = (await Deno.readTextFile(end.transcriptPath!)).split("\n");
        const msgs = log.filter((l) => l.startsWith('{"dir":"c2s"')).map((l) => JSON.parse(l));
        assert.deepEqual(msgs.map((m) => m.records.length), [2]);
        const report = await verifyTranscript(end.transcriptPath!, { trust: pki.trust });
        assert.equal(report.ok, true, report.reason ?? "");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
      bob.close();
    });
  },
});

/** The next relay that reaches `h`, as JSON. */
async function firstRelay(h: HostileClient) {
  while (true) {
    const m = messageOf(await h.readRecord(20_000));
    if (m.type === "relay") return m;
  }
}

Deno.test({
  name:
    "two of the largest lines in one msg reach real clients in one binary relay each, verified: a relay is smaller than its msg (PROTOCOL §6.4 'A relay on the wire')",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv, pki) => {
      const bob = await realClient(srv, pki, "bob");
      const carol = await realClient(srv, pki, "carol");
      const mallory = await login(srv, "mallory");
      // Two of the largest lines (4000 units each written \u0001): one msg of about 64.7 KB.
      // Until session 23 a relay (JSON) introducing mallory's certificate could not hold both
      // and the server split it in two, each with a proof from a derived path; binary, with
      // `ct` raw rather than base64, one relay holds both with room to spare. (A relay larger
      // than its msg now takes large ratchet envelopes beside large `ct`s: §6.3 step 7.)
      const lines = ["a", "b"].map((x) => x + "\u0001".repeat(3999));
      const wire = json(
        await signedUserMsgJson(mallory, 1, lines.map((t) => ({ body: text(t), to: LOBBY }))),
      );
      assert.ok(wire.length <= MAX_CONTENT_BYTES, `${wire.length} bytes`);
      await mallory.sendSealed(wire);
      assert.deepEqual(await bob.waitFor(2), lines);
      assert.deepEqual(await carol.waitFor(2), lines);
      mallory.close();
      assert.equal((await bob.done()).outcome, "closed");
      assert.equal((await carol.done()).outcome, "closed");
      // The server's transcripts of bob's and carol's sessions hold one relay line each, of
      // both records.
      const relays: { records: unknown[] }[] = [];
      for await (const entry of Deno.readDir(srv.transcripts)) {
        if (!entry.name.endsWith(".log")) continue;
        const text = await Deno.readTextFile(`${srv.transcripts}/${entry.name}`);
        for (const line of text.split("\n")) {
          if (line.startsWith('{"dir":"s2c","type":"relay"')) relays.push(JSON.parse(line));
        }
      }
      assert.equal(relays.length, 2, `${relays.length} relay lines`);
      assert.ok(relays.every((r) => r.records.length === 2));
    });
  },
});

Deno.test({
  name:
    "a msg spelt otherwise than its canonical form (whitespace, member order, escapes, 3.0) is relayed in the server's own form, never as it came (fwd17)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withServer(async (srv) => {
      const bob = await login(srv, "bob");
      const mallory = await login(srv, "mallory");
      const respelt = [
        // every member on its own line, indented
        (msg: string) => JSON.stringify(JSON.parse(msg), null, 1),
        (msg: string) => msg.replaceAll('"to":"lobby"', '"to":"lob\\u0062y"'),
        (msg: string) => msg.replace(/"ct":("[^"]*"),"c":("[^"]*")/g, '"c":$2,"ct":$1'),
        (msg: string) => msg.replace(/"seqno":(\d+),/g, '"seqno":$1.0,'),
      ];
      let seqno = 1;
      for (const [j, respell] of respelt.entries()) {
        const parts = [1, 2].map((k) => ({ body: text(`respelt ${j}.${k}`), to: LOBBY }));
        const sent = JSON.stringify(await signedUserMsgJson(mallory, seqno, parts));
        seqno += parts.length;
        const other = respell(sent);
        assert.notEqual(other, sent, `respelling ${j} changes the text`);
        await mallory.sendSealed(new TextEncoder().encode(other));
        // bob's relay of the two lines, binary (PROTOCOL §6.4 "A relay on the wire"): exactly
        // the layout the text gives its JSON form, whatever the msg's spelling was.
        let relay: Uint8Array;
        do {
          relay = await bob.readRecord(20_000);
        } while (!isBinaryRelay(relay));
        const form = messageOf(relay);
        assert.deepEqual(relay, encodeRelay(form), `respelling ${j}`);
        const { records } = form;
        assert.deepEqual(records.map((item: { record: object }) => Object.keys(item.record)), [
          ["sid", "dir", "to", "seqno", "ts", "ct", "c"],
          ["sid", "dir", "to", "seqno", "ts", "ct", "c"],
        ]);
        const opened = records.map((item: { record: MessageRecord; k: string }) =>
          // deno-lint-ignore no-explicit-any
          openContent(decodeRecord(item.record as any), fromBase64(item.k))
        );
        assert.deepEqual(opened, parts.map((p) => p.body), `respelling ${j}`);
        assert.ok(records.every((item: { record: { to: string } }) => item.record.to === LOBBY));
      }
      bob.close();
      mallory.close();
    }, { messageBurst: 100, messagesPerSecond: 100 });
  },
});
