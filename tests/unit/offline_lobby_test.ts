/**
 * The lobby's offline delivery (PROTOCOL §6.6) with stand-in sessions and a queue whose
 * operations the test holds open: what is stored reaches the recipient before the author's
 * later live records, even when a record is committed while a delivery runs or the
 * recipient logs in between an author's "not online" and the commit; acknowledgements
 * delete exactly what was delivered; refusals carry the store's reason.
 */
import assert from "node:assert/strict";
import { DEFAULT_SEND_QUEUE_BYTES } from "../../lib/wire/connection.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { ByteBuilder, fromBase64Each } from "../../lib/bytes.ts";
import {
  type AuthorCert,
  type Body,
  type C2sMsgMessage,
  C2sMsgShape,
  decodeRecord,
  leafHash,
  LOBBY,
  type MessageRecord,
  type PreparedRelay,
  ReceivedGroup,
  recipientUser,
  type RefusalCode,
  relaySharedBytes,
  sealContent,
  TO_SERVER,
  userMsgItem,
  userMsgsOf,
  userRecipient,
} from "../../lib/message/record.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { Lobby, Member } from "../../lib/server/lobby.ts";
import type { ChatSession, ReceivedMessage } from "../../lib/session/session.ts";
import type {
  MessageQueue,
  QueueAuthor,
  QueuedRecord,
  QueueLimits,
} from "../../lib/store/message_queue.ts";
import { checkedMessage, fromMember, RATCHET_ENVELOPE } from "../helpers/records.ts";
import type { ClusterLink } from "../../lib/cluster/link.ts";
import { parseMessage } from "../../lib/wire/messages.ts";
import { pollUntil } from "../../testkit/server_process.ts";

const LIMITS = { messagesPerSecond: 100, messageBurst: 100 };

class FakeSession {
  /** Every session message sent, in order: what the client would read. */
  readonly sent: string[] = [];
  readonly cert = new TextEncoder().encode("certificate");
  /** The hop seqnos of the stored records sent. */
  readonly storedHops: number[] = [];
  closing = false;
  #seqno = 0;
  constructor(readonly username: string, readonly sessionId = crypto.randomUUID()) {}
  get established() {
    return {
      conn: { queuedBytes: 0, maxQueuedBytes: DEFAULT_SEND_QUEUE_BYTES },
      peer: { der: this.cert },
    };
  }

  #author?: AuthorCert;
  get peerAuthor(): AuthorCert {
    return this.#author ??= authorCertOf(this.cert);
  }
  send(body: Body): Promise<number> {
    if (body.kind !== "notice") this.sent.push(`${body.kind}`);
    return Promise.resolve(++this.#seqno);
  }
  relay(prepared: PreparedRelay, type = "relay"): number {
    const text = prepared.forms.record.seqno;
    this.sent.push(`${type} ${text}`);
    if (type === "stored") this.storedHops.push(this.#seqno + 1);
    return ++this.#seqno;
  }
  /** A client that reads at once: the send queue always has room. */
  hasRoom(): boolean {
    return true;
  }
  drain(): Promise<void> {
    return Promise.resolve();
  }
  queued(of: number): void {
    this.sent.push(`queued ${of}`);
    this.#seqno++;
  }
  refuse(of: number, code: RefusalCode): void {
    this.sent.push(`refused ${of} ${code}`);
    this.#seqno++;
  }
  close(): Promise<void> {
    this.closing = true;
    return Promise.resolve();
  }
}

/** A queue in memory whose calls wait for `gate` when it is set. */
class FakeQueue implements MessageQueue {
  rows: (QueuedRecord & { recipient: string })[] = [];
  #next = 1;
  gate?: Promise<void>;
  failure?: SecureChatError;
  removed: number[] = [];
  async enqueue(recipient: string, author: QueueAuthor, item: string, limits: QueueLimits) {
    await this.gate;
    if (this.failure) throw this.failure;
    if (this.rows.filter((r) => r.recipient === recipient).length >= limits.maxRecords) {
      throw new SecureChatError("QUEUE_FULL", "full");
    }
    const id = this.#next++;
    this.rows.push({ id, recipient, author: author.name, item, storedAt: Date.now() });
    return id;
  }
  async pending(recipient: string, limit: number, after = 0) {
    await this.gate;
    return this.rows.filter((r) => r.recipient === recipient && r.id > after).slice(0, limit);
  }
  async remove(recipient: string, ids: readonly number[]) {
    await this.gate;
    this.removed.push(...ids);
    this.rows = this.rows.filter((r) => r.recipient !== recipient || !ids.includes(r.id));
  }
  purgeExpired() {
    return Promise.resolve(0);
  }
  removeSignedUnder() {
    return Promise.resolve(new Map<string, number>());
  }
}

function setup(maxRecords = 10) {
  const queue = new FakeQueue();
  const lobby = new Lobby(() => {}, LIMITS, undefined, {
    queue,
    limits: { maxRecords, maxAgeMs: 60_000 },
    lapsed: () => undefined,
  });
  const member = (name: string) => {
    const session = new FakeSession(name);
    return {
      session,
      member: new Member(session as unknown as ChatSession, "127.0.0.1:1", LIMITS, () => {}),
    };
  };
  return { queue, lobby, member };
}

let counter = 0;
function message(text: string, to: string, body?: Body, readable = false): ReceivedMessage {
  const m = checkedMessage(body ?? { kind: "text", text }, to, ++counter);
  if (body === undefined && recipientUser(to) !== null && !readable) {
    // A private text travels end to end: the server sees the envelope, never `k` (§12.6).
    const { seqno, ts, record, forms } = m;
    return { type: "sealed", seqno, ts, record, forms, e2e: RATCHET_ENVELOPE };
  }
  return m;
}

/** A promise the test resolves: holds the queue's calls open. */
function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

Deno.test("Lobby: a private record to an offline user is stored, and its author told queued after the commit", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  const m = message("later", userRecipient("bob"));
  const held = gate();
  queue.gate = held.promise;
  const receiving = lobby.receive(alice.member, fromMember(alice.member, m));
  await settle();
  assert.deepEqual(alice.session.sent, [], "nothing said before the commit");
  held.open();
  await receiving;
  assert.deepEqual(alice.session.sent, [`queued ${m.seqno}`]);
  assert.equal(queue.rows.length, 1);
  const stored = JSON.parse(queue.rows[0].item).relay;
  assert.deepEqual(Object.keys(stored), ["cert", "record", "e2e"], "no content key is stored");
});

Deno.test("Lobby: stored records reach the recipient at login before the author's later live ones", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  const first = message("one", userRecipient("bob"));
  await lobby.receive(alice.member, fromMember(alice.member, first));
  // bob logs in while his queue is slow to answer; alice's next record is live.
  const held = gate();
  queue.gate = held.promise;
  const bob = member("bob");
  await lobby.join(bob.member);
  const second = message("two", userRecipient("bob"));
  await lobby.receive(alice.member, fromMember(alice.member, second));
  await settle();
  assert.deepEqual(bob.session.sent, [], "the live record waits behind the stored one");
  held.open();
  await settle();
  assert.deepEqual(bob.session.sent, [`stored ${first.seqno}`, `relay ${second.seqno}`]);
});

Deno.test("Lobby: a record committed after the recipient's login delivery is sent at once, before the author's next", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  // alice's record is judged "not online"; its commit is held while bob logs in.
  const held = gate();
  queue.gate = held.promise;
  const late = message("late", userRecipient("bob"));
  const storing = lobby.receive(alice.member, fromMember(alice.member, late));
  await settle();
  queue.gate = undefined; // bob's login delivery finds nothing yet
  const bob = member("bob");
  await lobby.join(bob.member);
  await settle();
  assert.deepEqual(bob.session.sent, []);
  held.open();
  await storing;
  const next = message("next", userRecipient("bob"));
  await lobby.receive(alice.member, fromMember(alice.member, next));
  await settle();
  assert.deepEqual(bob.session.sent, [`stored ${late.seqno}`, `relay ${next.seqno}`]);
});

Deno.test("Lobby: received deletes exactly the records delivered up to that hop, once", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  for (const text of ["a", "b", "c"]) {
    await lobby.receive(
      alice.member,
      fromMember(alice.member, message(text, userRecipient("bob"))),
    );
  }
  const bob = member("bob");
  await lobby.join(bob.member);
  await settle();
  assert.equal(bob.session.sent.filter((s) => s.startsWith("stored")).length, 3);
  const [firstId, secondId] = queue.rows.map((r) => r.id);
  const upto = bob.session.storedHops[1];
  const received = () => message("", TO_SERVER, { kind: "received", upto });
  await lobby.receive(bob.member, fromMember(bob.member, received()));
  assert.deepEqual(queue.removed, [firstId, secondId]);
  await lobby.receive(bob.member, fromMember(bob.member, received()));
  assert.deepEqual(queue.removed, [firstId, secondId], "nothing deleted twice");
  assert.equal(queue.rows.length, 1);
});

Deno.test("Lobby: what the store refuses, the author is told with its code", async () => {
  const { queue, lobby, member } = setup(1);
  const alice = member("alice");
  await lobby.join(alice.member);
  const fits = message("fits", userRecipient("bob"));
  const full = message("full", userRecipient("bob"));
  await lobby.receive(alice.member, fromMember(alice.member, fits));
  await lobby.receive(alice.member, fromMember(alice.member, full));
  queue.failure = new SecureChatError("UNKNOWN_USER", "no such account");
  const nobody = message("hello?", userRecipient("nobody"));
  await lobby.receive(alice.member, fromMember(alice.member, nobody));
  queue.failure = new SecureChatError("DB_UNAVAILABLE", "down");
  const down = message("down", userRecipient("carol"));
  await lobby.receive(alice.member, fromMember(alice.member, down));
  assert.deepEqual(alice.session.sent, [
    `queued ${fits.seqno}`,
    `refused ${full.seqno} QUEUE_FULL`,
    `refused ${nobody.seqno} NOT_ONLINE`,
    `refused ${down.seqno} DB_UNAVAILABLE`,
  ]);
});

Deno.test("Lobby: a stored record the device could not open stays for the user's other devices", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  for (const text of ["a", "b", "c"]) {
    await lobby.receive(
      alice.member,
      fromMember(alice.member, message(text, userRecipient("bob"))),
    );
  }
  const [a, b, c] = queue.rows.map((r) => r.id);
  const phone = member("bob");
  await lobby.join(phone.member);
  await settle();
  const [, unreadHop, lastHop] = phone.session.storedHops;
  await lobby.receive(
    phone.member,
    fromMember(
      phone.member,
      message("", TO_SERVER, { kind: "received", upto: lastHop, unread: [unreadHop] }),
    ),
  );
  assert.deepEqual(queue.removed, [a, c]);
  assert.deepEqual(queue.rows.map((r) => r.id), [b]);
  // bob's other device logs in (after the first left): it gets what the first could not open.
  await lobby.leave(phone.member);
  const laptop = member("bob");
  await lobby.join(laptop.member);
  await settle();
  assert.deepEqual(laptop.session.sent.filter((s) => s.startsWith("stored")), [
    phone.session.sent.filter((s) => s.startsWith("stored"))[1],
  ]);
});

Deno.test("Lobby: a record the server could read is never stored: refused NOT_ONLINE", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  const readable = message("in the clear", userRecipient("bob"), undefined, true);
  await lobby.receive(alice.member, fromMember(alice.member, readable));
  assert.deepEqual(alice.session.sent, [`refused ${readable.seqno} NOT_ONLINE`]);
  assert.deepEqual(queue.rows, []);
});

Deno.test("Lobby in a cluster: while a member's offline queue is being delivered (its live relays held back), the cursor the node reports stops where it stood; it moves on once nothing is held", async () => {
  // A node killed while it held records back never sent them: the node its user reconnects to
  // replays from the cursor this one reported, which must not pass them (DEPLOY.md §4.2).
  const queue = new FakeQueue();
  const cluster = {
    processed: 40,
    publishRecord: () => Promise.resolve({ outcome: "stored", seq: 41 }),
    remoteUsers: () => [],
    announceLogin: () => {},
    announcePresence: () => {},
    lastSeen: () => undefined,
  };
  const lobby = new Lobby(() => {}, LIMITS, cluster as unknown as ClusterLink, {
    queue,
    limits: { maxRecords: 10, maxAgeMs: 60_000 },
    lapsed: () => undefined,
  });
  const heldFrom = lobby.clusterHandlers().heldFrom;
  let open!: () => void;
  queue.gate = new Promise((resolve) => open = resolve);
  const bob = new FakeSession("bob");
  await lobby.join(
    new Member(bob as unknown as ChatSession, "127.0.0.1:1", LIMITS, () => {}),
  );
  // The store does not answer yet: bob's delivery holds his live relays back.
  assert.equal(heldFrom(), 40);
  cluster.processed = 90; // the stream goes on meanwhile
  assert.equal(heldFrom(), 40);
  open();
  await pollUntil(() => heldFrom() === undefined || undefined, 2000, () => `${heldFrom()}`);
});

/**
 * A user's msg as the server's session hands its lobby line to the lobby (ReceivedGroup.whole,
 * its signature a stand-in): two short lobby lines, then five acknowledgements to the server as
 * large as a body makes them (1000 `unread` seqnos each).
 */
function lobbyLinesBesideLargeRecords(): { lines: ReceivedMessage[]; group: ReceivedGroup } {
  const unread = Array.from({ length: 1000 }, (_, i) => 1_000_000 + i);
  const parts: { body: Body; to: string }[] = ["hi", "there"].map((text) => ({
    body: { kind: "text", text },
    to: LOBBY,
  }));
  for (let j = 0; j < 5; j++) {
    parts.push({ body: { kind: "received", upto: 2_000_000, unread }, to: TO_SERVER });
  }
  const made = parts.map(({ body, to }, j) => {
    const { k, ct, c } = sealContent(body);
    const record: MessageRecord = {
      sid: "0f".repeat(16),
      dir: "c2s",
      to,
      seqno: 1 + j,
      ts: Date.now(),
      ct,
      c,
      sig: new Uint8Array(64).fill(7),
      batch: { i: j, n: parts.length, path: [] },
    };
    return { record, k };
  });
  const [msg] = userMsgsOf(made.map(({ record, k }) => userMsgItem(record, k, undefined)));
  const out = new ByteBuilder(msg.length);
  msg.writeTo(out);
  const parsed = parseMessage(out.done().slice(), C2sMsgShape) as C2sMsgMessage;
  const records = parsed.records.map((item) => decodeRecord(item.record));
  const [sig, ...proof] = fromBase64Each([parsed.sig, ...parsed.proof]);
  const group = new ReceivedGroup(
    parsed,
    { sig, first: parsed.first, n: parsed.n, proof },
    records,
    records.map(leafHash),
  );
  const lines = [0, 1].map((j): ReceivedMessage => {
    const item = parsed.records[j] as { record: C2sMsgMessage["records"][0]["record"]; k: string };
    const forms = group.whole(j, item.record);
    const [k] = fromBase64Each([item.k]);
    return {
      type: "msg",
      seqno: forms.record.seqno,
      ts: forms.record.ts,
      body: parts[j].body,
      record: forms.record,
      forms,
      k,
    };
  });
  return { lines, group };
}

Deno.test("Lobby: a relay held during an offline delivery counts the msg it keeps, once per msg, and gives it back as it leaves (review17 R17-5)", async () => {
  const { queue, lobby, member } = setup();
  const alice = member("alice");
  await lobby.join(alice.member);
  await lobby.receive(alice.member, fromMember(alice.member, message("one", userRecipient("bob"))));
  // bob logs in while his queue is slow to answer: live relays to him are held.
  const held = gate();
  queue.gate = held.promise;
  const bob = member("bob");
  await lobby.join(bob.member);
  await settle();
  assert.ok(bob.member.deferred, "bob's delivery holds live relays");
  const { lines, group } = lobbyLinesBesideLargeRecords();
  const prepared = lines.map((m) =>
    (fromMember(alice.member, m) as Extract<ReceivedMessage, { type: "msg" }>).prepared!
  );
  // What a held relay keeps: its own bytes and, through its group, every record of the msg.
  const kept = (group.message as C2sMsgMessage).records
    .reduce((sum, r) => sum + r.record.ct.length, 0);
  assert.ok(kept > 20 * relaySharedBytes(prepared[0]), "the msg is far larger than a line");
  for (const m of lines) await lobby.receive(alice.member, fromMember(alice.member, m));
  assert.equal(bob.member.deferred!.length, 2);
  // The msg once, however many of its relays are held.
  assert.equal(
    bob.member.deferredBytes,
    relaySharedBytes(prepared[0]) + relaySharedBytes(prepared[1]) + group.retainedBytes,
  );
  assert.ok(bob.member.deferredBytes >= kept, `${bob.member.deferredBytes} counted, ${kept} kept`);
  // The delivery ends: the held relays leave, and with them what they were counted at.
  held.open();
  await settle();
  assert.deepEqual(
    bob.session.sent.slice(-2),
    prepared.map((p) => `relay ${p.forms.record.seqno}`),
  );
  assert.equal(bob.member.deferred, undefined);
  assert.equal(bob.member.deferredBytes, 0);
});
