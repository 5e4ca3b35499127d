/**
 * review15 R1 and R1b: a user's record is relayed, or stored and delivered later, with its
 * author's certificate and the hop's members around it. Bounded only by the frame, a `msg`
 * that just fitted made a relay that did not, and every recipient's session ended at its
 * outbox — one line from any user cut the whole lobby off, again at every login for a stored
 * one. PROTOCOL §6.1 "Why MAX_CT_BYTES" and §6.3 step 7: the author's record is refused
 * (PROTOCOL_ERROR, the author's session ends) and every other session goes on.
 */
import assert from "node:assert/strict";
import { fromBase64, toBase64 } from "../lib/bytes.ts";
import { signatureLength } from "../lib/crypto/signature.ts";
import type { E2eEnvelope } from "../lib/e2e/envelope.ts";
import { codeOf } from "../lib/errors.ts";
import { authorCertOf } from "../lib/message/author_certs.ts";
import {
  type Body,
  encodeRecord,
  largestLoneRelayBytes,
  LOBBY,
  loneRelayBytes,
  MAX_CT_BYTES,
  MAX_TEXT_CHARS,
  type MessageRecord,
  openContent,
  prepareRelay,
  RecordForms,
  type RecordJson,
  signBatch,
} from "../lib/message/record.ts";
import { MAX_CONTENT_BYTES } from "../lib/handshake/record.ts";
import { ChatSession, type ReceivedMessage } from "../lib/session/session.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import type { HostileClient } from "../testkit/hostile.ts";
import { loggedIn } from "./helpers/logged_in.ts";
import { makePki } from "../testkit/pki.ts";
import { pollUntil } from "../testkit/server_process.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE } from "./helpers/records.ts";
import { messageOf } from "./helpers/relay_wire.ts";

const USERS = ["alice", "bob", "carol", "dave", "mallory"];
const pki = await makePki(USERS);
const ACCOUNTS = Object.fromEntries(USERS.map((u) => [u, `${u}-password-1`]));

type Json = Record<string, unknown>;

/** Reads the server's messages until one `match` takes (key updates followed); throws if the
 * session ends first. */
async function readUntil(h: HostileClient, match: (m: Json) => boolean): Promise<Json> {
  const deadline = Date.now() + 10_000;
  while (true) {
    const content = await h.readRecord(Math.max(1, deadline - Date.now()));
    const m = messageOf(content); // a relay as its JSON form (PROTOCOL §6.4)
    if (m.type === "key_update") {
      h.records!.updateReceive();
      continue;
    }
    if (m.type === "error") throw new Error(`${h.opts.username}'s session ended: ${m.code}`);
    if (match(m)) return m;
  }
}

/** What `h` hears first that `match` takes (its type, and a refusal's code), or why its
 * session ended. */
async function nextOf(h: HostileClient, match: (m: Json) => boolean): Promise<string> {
  try {
    const m = await readUntil(h, match);
    return `${m.type} ${m.code ?? ""}`;
  } catch (error) {
    return String(error);
  }
}

/** The body of a server's `msg` (a notice, an answer to `who`). */
function bodyOf(m: Json): Body | undefined {
  if (m.type !== "msg") return undefined;
  const record = m.record as Json;
  return openContent(
    {
      ...record,
      ct: fromBase64(record.ct as string),
      c: fromBase64(record.c as string),
    } as unknown as MessageRecord,
    fromBase64(m.k as string),
  );
}

/** A notice's text, or "". */
function whoAnswer(m: Json): string {
  const body = bodyOf(m);
  return body?.kind === "notice" ? body.text : "";
}

/** The session answers: a `who` gets its notice. */
async function stillInSession(h: HostileClient): Promise<void> {
  await h.sendMsg({ kind: "who" }, { to: "server" });
  await readUntil(h, (m) => /^online/.test(whoAnswer(m)));
}

/** A logged-in member of the lobby (its `who` answered, so the lobby holds it). */
async function member(srv: Awaited<ReturnType<typeof startInProcessServer>>, username: string) {
  const h = await srv.client({ username, password: ACCOUNTS[username] });
  await h.handshake();
  await stillInSession(h);
  return h;
}

/**
 * A `msg` of an end-to-end record of `ctBytes` (the server cannot read its body: §12.6), with
 * the carrier `e2e`, signed by `h`'s key.
 */
async function sealedMsg(
  h: HostileClient,
  ctBytes: number,
  to: string,
  e2e: unknown,
): Promise<Uint8Array> {
  return await h.msgContent(new Uint8Array(ctBytes - 16).fill(0x41), {
    to,
    message: (m) => {
      const [{ record }] = m.records as { record: unknown }[];
      return { ...m, records: [{ record, e2e }] };
    },
  });
}

/**
 * The `ct` size (bytes) that makes `shape(record with that ct)`'s JSON `target` characters long
 * (within 4), for `h` as the signing author of a record to `to`.
 */
async function ctForLength(
  h: HostileClient,
  to: string,
  target: number,
  shape: (record: unknown) => unknown,
): Promise<number> {
  const record: MessageRecord = {
    sid: h.sessionId!,
    dir: "c2s",
    to,
    seqno: 99,
    ts: Date.now(),
    ct: new Uint8Array(3),
    c: new Uint8Array(32),
  };
  await signBatch(h.opts.identity.signingKey, [record]);
  const overhead = JSON.stringify(shape(encodeRecord(record))).length - 4;
  // Four base64 characters are three bytes of ct.
  return Math.floor((target - overhead) / 4) * 3;
}

/**
 * The largest `ct` whose `msg` (PROTOCOL §6.3: one record, a batch of one) still fits one
 * record's content (§3.2): all the frame allowed.
 */
function largestCtInAFrame(h: HostileClient, to: string, e2e: unknown): Promise<number> {
  return ctForLength(h, to, MAX_CONTENT_BYTES - 16, (record) => {
    const { sig, batch: _batch, ...bare } = record as RecordJson;
    return {
      type: "msg",
      sig,
      first: bare.seqno,
      n: 1,
      proof: [],
      records: [{ record: bare, e2e }],
    };
  });
}

Deno.test({
  name: "review15 R1: an e2e lobby msg that fits a frame but whose relay would not is refused " +
    "from its author; every recipient's session goes on",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await startInProcessServer(pki, ACCOUNTS);
    try {
      const bob = await member(srv, "bob");
      const carol = await member(srv, "carol");
      const mallory = await member(srv, "mallory");
      const ctBytes = await largestCtInAFrame(mallory, LOBBY, SENDER_ENVELOPE);
      assert.ok(ctBytes > MAX_CT_BYTES, `a ct of ${ctBytes} bytes fits a msg`);
      const msg = await sealedMsg(mallory, ctBytes, LOBBY, SENDER_ENVELOPE);
      assert.ok(msg.length <= MAX_CONTENT_BYTES && msg.length > 65_000, `msg of ${msg.length}`);
      await mallory.sendSealed(msg);
      // Her `who` is answered once her line went to bob and carol (one session's messages are
      // handled in order): before the fix it was, and bob's and carol's sessions had ended.
      await mallory.sendMsg({ kind: "who" }, { to: "server" });
      const answer = await nextOf(mallory, (m) => /^online/.test(whoAnswer(m)));
      await stillInSession(bob);
      await stillInSession(carol);
      assert.match(answer, /PROTOCOL_ERROR/);
      bob.close();
      carol.close();
    } finally {
      await srv.dispose();
    }
  },
});

Deno.test({
  name: "review15 R1b: an e2e private msg to a user offline that fits a frame but whose stored " +
    "form would not is refused from its author; the recipient's next login goes on",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await startInProcessServer(pki, ACCOUNTS);
    try {
      const mallory = await member(srv, "mallory");
      // What the queue takes (its rows are at most 65536 characters, lib/store/message_queue.ts),
      // but not a `stored` message once the hop's seqno, ts and author_fp are around it.
      const cert = toBase64(mallory.opts.identity.certDer);
      const ctBytes = await ctForLength(
        mallory,
        "user:dave",
        65_400,
        (record) => ({ relay: { cert, record, e2e: RATCHET_ENVELOPE } }),
      );
      await mallory.sendSealed(await sealedMsg(mallory, ctBytes, "user:dave", RATCHET_ENVELOPE));
      // Before the fix: `queued`, and dave's session ended at his login (at every login).
      const answer = await nextOf(mallory, (m) => m.type === "queued" || m.type === "refused");
      const dave = await member(srv, "dave");
      // Whatever the queue held for dave has been sent by now (his `who` answer came after it).
      await stillInSession(dave);
      dave.close();
      assert.match(answer, /PROTOCOL_ERROR/);
    } finally {
      await srv.dispose();
    }
  },
});

Deno.test({
  name: "a c2s record one byte above MAX_CT_BYTES is PROTOCOL_ERROR from its author; one at " +
    "MAX_CT_BYTES is relayed, introducing its author's certificate, and the lobby goes on",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await startInProcessServer(pki, ACCOUNTS);
    try {
      const bob = await member(srv, "bob");
      const alice = await member(srv, "alice");
      const mallory = await member(srv, "mallory");
      await mallory.sendSealed(await sealedMsg(mallory, MAX_CT_BYTES + 1, LOBBY, SENDER_ENVELOPE));
      const end = await mallory.expectEnd();
      assert.equal(end.code, "PROTOCOL_ERROR");
      await stillInSession(bob);
      const refusal = await pollUntil(
        () => srv.logs.find((e) => e.user === "mallory" && e.event === "PROTOCOL_ERROR"),
        10_000,
        () => JSON.stringify(srv.logs.filter((e) => e.user === "mallory")),
      );
      assert.match(String(refusal.detail), /ct/);
      await stillInSession(bob);
      await alice.sendSealed(await sealedMsg(alice, MAX_CT_BYTES, LOBBY, SENDER_ENVELOPE));
      const relay = await readUntil(bob, (m) => m.type === "relay");
      assert.equal(typeof relay.cert, "string", "alice's certificate introduced");
      const [item] = relay.records as { record: Json }[];
      assert.equal(fromBase64(item.record.ct as string).length, MAX_CT_BYTES);
      await stillInSession(alice);
      await stillInSession(bob);
      alice.close();
      bob.close();
    } finally {
      await srv.dispose();
    }
  },
});

Deno.test({
  name: "the largest honest text (4000 code units, each written \\uXXXX) relays to a recipient " +
    "introduced to its author's certificate",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const srv = await startInProcessServer(pki, ACCOUNTS);
    try {
      const bob = await member(srv, "bob");
      const alice = await member(srv, "alice");
      const text = "\u0001".repeat(MAX_TEXT_CHARS);
      const body = new TextEncoder().encode(JSON.stringify({ kind: "text", text }));
      assert.equal(body.length, 25 + 6 * MAX_TEXT_CHARS);
      assert.ok(body.length + 16 <= MAX_CT_BYTES);
      await alice.sendMsg({ kind: "text", text });
      const relay = await readUntil(bob, (m) => m.type === "relay");
      assert.equal(typeof relay.cert, "string", "alice's certificate introduced");
      const [item] = relay.records as { record: Json; k: string }[];
      const got = bodyOf({ type: "msg", record: item.record, k: item.k });
      assert.deepEqual(got, { kind: "text", text });
      await stillInSession(bob);
      alice.close();
      bob.close();
    } finally {
      await srv.dispose();
    }
  },
});

Deno.test(
  "prepareRelay refuses a record whose relay or stored alone would not fit one record, " +
    "before any recipient session is touched (INTERNAL past the acceptance, PROTOCOL_ERROR at it)",
  async () => {
    const alice = await pki.identity("alice");
    const author = authorCertOf(alice.certDer);
    const make = (ctBytes: number): MessageRecord => ({
      sid: "0".repeat(32),
      dir: "c2s",
      to: "user:bob",
      seqno: 1,
      ts: Date.now(),
      ct: new Uint8Array(ctBytes),
      c: new Uint8Array(32),
    });
    const fits = make(MAX_CT_BYTES);
    const over = make(60_000); // no schema in the way: the builder checks its own bound
    await signBatch(alice.signingKey, [fits]);
    await signBatch(alice.signingKey, [over]);
    const forms = (r: MessageRecord) => new RecordForms(r, encodeRecord(r));
    assert.ok(
      loneRelayBytes(prepareRelay(author, forms(fits), undefined, RATCHET_ENVELOPE)) <=
        MAX_CONTENT_BYTES,
    );
    for (const fault of ["INTERNAL", "PROTOCOL_ERROR"] as const) {
      assert.throws(
        () => prepareRelay(author, forms(over), undefined, RATCHET_ENVELOPE, fault),
        (error: unknown) => codeOf(error) === fault && /would take \d+ bytes/.test(String(error)),
      );
    }
    assert.throws(
      () => prepareRelay(author, forms(over), new Uint8Array(32)),
      (error: unknown) => codeOf(error) === "INTERNAL",
    );
  },
);

Deno.test("a client refuses locally to make a record above MAX_CT_BYTES (INVALID_INPUT), before it takes a seqno", async () => {
  const transcripts = await Deno.makeTempDir();
  try {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const [serverTcp, clientTcp] = await Promise.all([
      listener.accept(),
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    ]);
    listener.close();
    const [s, c] = await loggedIn(
      pki,
      new FrameConnection(serverTcp),
      new FrameConnection(clientTcp),
    );
    const storage = transcriptDirectory(transcripts);
    const server = await ChatSession.start(s, { transcripts: storage });
    const client = await ChatSession.start(c, { transcripts: storage, relayTrust: pki.trust });
    const received: ReceivedMessage[] = [];
    const serverRun = server.run({ onMessage: (m) => void received.push(m) });
    const clientRun = client.run({ onMessage: () => {} });
    // 5000 units written \uXXXX: 30,025 bytes of body, over what any honest body needs.
    await assert.rejects(
      client.send({ kind: "text", text: "\u0001".repeat(5000) }),
      (error: unknown) => codeOf(error) === "INVALID_INPUT",
    );
    assert.equal(await client.send({ kind: "text", text: "next" }), 1);
    await client.close();
    await Promise.all([serverRun, clientRun]);
    assert.deepEqual(received.map((m) => m.type === "msg" && m.record.seqno), [1]);
  } finally {
    await Deno.remove(transcripts, { recursive: true });
  }
});

Deno.test("largestLoneRelayBytes (the client's check before a seqno) bounds the relay and stored of any record the server would take, and refuses what it would not", async () => {
  const alice = await pki.identity("alice");
  const author = authorCertOf(alice.certDer);
  const sigBytes = signatureLength(alice.signingKey);
  const pre = {
    ik: toBase64(new Uint8Array(32)),
    ik_sig: toBase64(new Uint8Array(sigBytes)),
    ek: toBase64(new Uint8Array(32)),
    spk_id: 4294967295,
    pq_id: 4294967295,
    opk_id: 4294967295,
    kem_ct: toBase64(new Uint8Array(1088)),
  };
  const [oneWrap] = (RATCHET_ENVELOPE as Extract<E2eEnvelope, { kind: "ratchet" }>).wraps;
  const wrap = { ...oneWrap, pre };
  const eightFirstContacts = { ...RATCHET_ENVELOPE, wraps: Array(8).fill(wrap) } as E2eEnvelope;
  for (
    const [to, e2e] of [["lobby", SENDER_ENVELOPE], ["user:bob", eightFirstContacts]] as const
  ) {
    for (const ctBytes of [16, 1000, MAX_CT_BYTES]) {
      const record: MessageRecord = {
        sid: "1".repeat(32),
        dir: "c2s",
        to,
        seqno: 3,
        ts: Date.now(),
        ct: new Uint8Array(ctBytes),
        c: new Uint8Array(32),
      };
      await signBatch(alice.signingKey, [record]);
      const real = loneRelayBytes(
        prepareRelay(author, new RecordForms(record, encodeRecord(record)), undefined, e2e),
      );
      const bound = largestLoneRelayBytes(author, sigBytes, to, ctBytes);
      assert.ok(real <= bound && bound - real < 1000, `${to} ${ctBytes}: ${real} ≤ ${bound}`);
    }
  }
  // A certificate of 16 KiB with 1024-byte signatures: the largest private line cannot leave
  // (8 first contacts would not fit), a lobby line can.
  const big = authorCertOf(new Uint8Array(16 * 1024));
  assert.ok(largestLoneRelayBytes(big, 1024, "user:bob", MAX_CT_BYTES) > MAX_CONTENT_BYTES);
  assert.ok(largestLoneRelayBytes(big, 1024, "lobby", MAX_CT_BYTES) <= MAX_CONTENT_BYTES);
});
