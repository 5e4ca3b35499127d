/**
 * lib/server/lobby.ts directly, with stand-in sessions that record what the lobby sends:
 * who hears what, takeover by a second login, relays (the author's record forwarded once
 * serialised, never signed by the server), private records, refusals (rate limit, not
 * online), dropping a member whose sends fail.
 */
import assert from "node:assert/strict";
import { DEFAULT_SEND_QUEUE_BYTES } from "../../lib/wire/connection.ts";
import { fromBase64, toBase64 } from "../../lib/bytes.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";
import type { LogFields } from "../../lib/log.ts";
import {
  type AuthorCert,
  type Body,
  BodyShape,
  LOBBY,
  MAX_MEMBERS_PER_BODY,
  MAX_SERVER_BODY_BYTES,
  MAX_TEXT_CHARS,
  onlineBodies,
  type PreparedRelay,
  RecipientRelayGroup,
  type RefusalCode,
  relaySharedBytes,
  TO_SERVER,
  userRecipient,
} from "../../lib/message/record.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { Lobby, type LobbyLimits, Member } from "../../lib/server/lobby.ts";
import type { KeyDirectory } from "../../lib/store/key_directory.ts";
import type { ChatSession, ReceivedMessage } from "../../lib/session/session.ts";
import { checkedMessage, fromMember, wireBytes } from "../helpers/records.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
import type { ClusterLink, PublishOutcome } from "../../lib/cluster/link.ts";
import type { RecordEnvelope } from "../../lib/cluster/messages.ts";
import type { CloseCode } from "../../lib/wire/messages.ts";

/** The part of ChatSession the lobby uses, recording every send. */
class FakeSession {
  readonly notices: string[] = [];
  readonly operator: { text: string; private?: true }[] = [];
  readonly relays: PreparedRelay[] = [];
  readonly refusals: { of: number; code: RefusalCode }[] = [];
  readonly cert: Uint8Array;
  closing = false;
  /** The code each close() was given (PROTOCOL §7.1: a takeover's). */
  readonly closeCodes: (CloseCode | undefined)[] = [];
  /** What the next sends throw, if set. */
  failure: unknown;

  constructor(readonly username: string, readonly sessionId = crypto.randomUUID()) {
    this.cert = new TextEncoder().encode(`certificate of ${username}`);
  }

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
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (body.kind === "notice") this.notices.push(body.text);
    if (body.kind === "operator") this.operator.push({ text: body.text, private: body.private });
    return Promise.resolve(1);
  }

  relay(prepared: PreparedRelay): void {
    if (this.failure !== undefined) throw this.failure;
    this.relays.push(prepared);
  }

  refuse(of: number, code: RefusalCode): void {
    this.refusals.push({ of, code });
  }

  close(code?: CloseCode): Promise<void> {
    this.closeCodes.push(code);
    this.closing = true;
    return Promise.resolve();
  }

  /** Ended with an `error` told to the client (PROTOCOL §8.1). */
  readonly terminated: SecureChatError[] = [];
  terminate(error: SecureChatError): Promise<void> {
    this.terminated.push(error);
    this.closing = true;
    return Promise.resolve();
  }
}

/** Joins and leaves are told at once here; their coalescing is tests/unit/presence_test.ts's. */
function setup(
  limits: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40, presenceNoticeMs: 0 },
) {
  const logged: { event: string; fields?: LogFields }[] = [];
  const lobby = new Lobby((event, fields) => void logged.push({ event, fields }), limits);
  const join = async (username: string) => {
    const session = new FakeSession(username);
    const dropped: SecureChatError[] = [];
    const member = new Member(
      session as unknown as ChatSession,
      `127.0.0.1:${40000 + logged.length}`,
      limits,
      (error) => void dropped.push(error),
    );
    await lobby.join(member);
    return { session, member, dropped };
  };
  return { lobby, logged, join };
}

let seqno = 0;
/** A verified record from a member, as the session hands it to the lobby. */
const message = (body: Body, to: string): ReceivedMessage => checkedMessage(body, to, ++seqno);

const wire = (p: PreparedRelay) => readRelay(wireBytes(new RecipientRelayGroup(p, 9, 1, true)));

Deno.test("Lobby.join(): the newcomer is welcomed with who is online, the others told", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  assert.deepEqual(alice.session.notices, ["welcome alice; online: alice", "bob joined"]);
  assert.deepEqual(bob.session.notices, ["welcome bob; online: alice, bob"]);
  assert.deepEqual(lobby.names(), ["alice", "bob"]);
});

Deno.test("Lobby.join(): a second login takes over, case-insensitively; the old leave is a no-op", async () => {
  const { lobby, logged, join } = setup();
  const first = await join("alice");
  const bob = await join("bob");
  const second = await join("Alice");
  assert.deepEqual(lobby.names(), ["Alice", "bob"]);
  // The close's code is the client's signal (PROTOCOL §7.1); a notice is display only (§6.2).
  assert.deepEqual(first.session.closeCodes, ["SESSION_TAKEN_OVER"]);
  assert.ok(logged.some((e) => e.event === "SESSION_REPLACED"));
  await lobby.leave(first.member);
  assert.deepEqual(lobby.names(), ["Alice", "bob"]);
  await lobby.leave(second.member);
  assert.deepEqual(lobby.names(), ["bob"]);
  assert.equal(bob.session.notices.at(-1), "Alice left");
});

Deno.test("Lobby.receive(): a text reaches every other member as the author's record, serialised once, no server signature", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  const m = message({ kind: "text", text: "hello all" }, LOBBY);
  await lobby.receive(alice.member, fromMember(alice.member, m));
  assert.equal(alice.session.relays.length, 0, "never echoed to its author");
  assert.equal(bob.session.relays.length, 1);
  assert.strictEqual(bob.session.relays[0], carol.session.relays[0], "one serialisation for all");
  const relay = wire(bob.session.relays[0]);
  if (m.type !== "msg") throw new Error("not a msg");
  // The record without sig and batch, which the relay carries once (PROTOCOL §6.4).
  const { sig, batch, ...bare } = m.forms.json;
  assert.deepEqual(relay.records[0].record, bare);
  assert.deepEqual([relay.sig, relay.first, relay.n, relay.proof], [sig, m.seqno, batch!.n, []]);
  assert.equal(relay.cert, toBase64(alice.session.cert));
  assert.equal(relay.author_fp, fingerprintOf(alice.session.cert));
  const item = relay.records[0];
  assert.ok("k" in item, "a lobby text the server can read carries `k`");
  assert.deepEqual(fromBase64(item.k), m.k);
  assert.deepEqual(Object.keys(relay), [
    "type",
    "seqno",
    "ts",
    "author_fp",
    "cert",
    "sig",
    "first",
    "n",
    "proof",
    "records",
  ]);
});

Deno.test("Lobby.receive(): a line of a session taken over reaches the others, never the session that took over; a closing member hears nothing", async () => {
  const { lobby, join } = setup();
  const first = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  // The first session's line arrives after the second login replaced it (its session closing).
  const second = await join("Alice");
  first.session.closing = false; // still handing on what it had read
  await lobby.receive(
    first.member,
    fromMember(first.member, message({ kind: "text", text: "late" }, LOBBY)),
  );
  assert.equal(second.session.relays.length, 0, "the author's own other session: same member key");
  assert.equal(bob.session.relays.length, 1);
  assert.equal(carol.session.relays.length, 1);
  carol.session.closing = true;
  await lobby.receive(
    bob.member,
    fromMember(bob.member, message({ kind: "text", text: "to the open ones" }, LOBBY)),
  );
  assert.equal(carol.session.relays.length, 1, "a closing member is given no more relays");
  assert.equal(second.session.relays.length, 1);
});

Deno.test("Lobby.receive(): user:x reaches one member, case-insensitively; one not online is refused", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("BOB");
  const carol = await join("carol");
  await lobby.receive(
    alice.member,
    fromMember(alice.member, message({ kind: "text", text: "psst" }, userRecipient("bob"))),
  );
  const absent = message({ kind: "text", text: "hello?" }, userRecipient("dave"));
  await lobby.receive(alice.member, fromMember(alice.member, absent));
  assert.equal(bob.session.relays.length, 1);
  assert.equal(carol.session.relays.length, 0);
  assert.deepEqual(alice.session.refusals, [{ of: absent.seqno, code: "NOT_ONLINE" }]);
});

Deno.test("Lobby.receive(): who answers the asker alone", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const before = bob.session.notices.length;
  await lobby.receive(alice.member, fromMember(alice.member, message({ kind: "who" }, TO_SERVER)));
  assert.equal(alice.session.notices.at(-1), "online: alice, bob");
  assert.equal(bob.session.notices.length, before);
});

Deno.test("Lobby.receive(): past the burst every kind is refused by seqno with RATE_LIMITED, relayed to nobody", async () => {
  const { lobby, logged, join } = setup({
    messagesPerSecond: 0.001,
    messageBurst: 2,
    presenceNoticeMs: 0,
  });
  const alice = await join("alice");
  const bob = await join("bob");
  const sent = [1, 2, 3].map((i) => message({ kind: "text", text: `t${i}` }, LOBBY));
  for (const m of sent) await lobby.receive(alice.member, fromMember(alice.member, m));
  const who = message({ kind: "who" }, TO_SERVER);
  await lobby.receive(alice.member, fromMember(alice.member, who));
  assert.equal(bob.session.relays.length, 2);
  assert.deepEqual(alice.session.refusals, [
    { of: sent[2].seqno, code: "RATE_LIMITED" },
    { of: who.seqno, code: "RATE_LIMITED" },
  ]);
  assert.equal(logged.filter((e) => e.event === "RATE_LIMITED").length, 2);
});

Deno.test("Lobby: a member whose send fails is dropped with that code; the others still hear", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  bob.session.failure = new SecureChatError("SLOW_CONSUMER", "queue full");
  await lobby.receive(
    alice.member,
    fromMember(alice.member, message({ kind: "text", text: "x" }, LOBBY)),
  );
  assert.deepEqual(bob.dropped.map((e) => e.code), ["SLOW_CONSUMER"]);
  assert.equal(carol.session.relays.length, 1);
});

Deno.test("Lobby.operatorSays(): to everyone, or privately to one member", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  await lobby.operatorSays("maintenance at noon");
  await lobby.operatorSays("a word", "BOB");
  assert.deepEqual(alice.session.operator, [{ text: "maintenance at noon", private: undefined }]);
  assert.deepEqual(bob.session.operator, [
    { text: "maintenance at noon", private: undefined },
    { text: "a word", private: true },
  ]);
});

Deno.test("Lobby.join(): 500 joins in one window cost each member one coalesced notice; every welcome and /who page fits a notice", async () => {
  // Before: member 0 got 499 "joined" notices (N² in all), and from ~360 users on the welcome
  // and `/who` exceeded MAX_TEXT_CHARS, which a client refuses as malformed.
  const { lobby, join } = setup({
    messagesPerSecond: 20,
    messageBurst: 40,
    presenceNoticeMs: 60_000,
  });
  const names = Array.from({ length: 500 }, (_, i) => `user${String(i).padStart(3, "0")}`);
  const members = [];
  for (const name of names) members.push(await join(name));
  try {
    const [first, last] = [members[0], members[499]];
    assert.deepEqual(first.session.notices, ["welcome user000; online: user000"]);
    assert.equal(
      last.session.notices[0],
      `welcome user499; 500 online: ${
        names.slice(0, 50).join(", ")
      } and 450 more (/who lists everyone)`,
    );
    // A line flushes the joins told so far ahead of it: one notice, in join order.
    await lobby.receive(
      first.member,
      fromMember(first.member, message({ kind: "text", text: "hi all" }, LOBBY)),
    );
    assert.deepEqual(first.session.notices.slice(1), [
      `${names.slice(1, 21).join(", ")} and 479 others joined`,
    ]);
    assert.equal(last.session.notices.length, 2);
    assert.equal(last.session.relays.length, 1, "the line came after the notice");

    await lobby.receive(last.member, fromMember(last.member, message({ kind: "who" }, TO_SERVER)));
    const pages = last.session.notices.slice(2);
    assert.ok(pages.length > 1 && pages.every((p) => p.length <= MAX_TEXT_CHARS), `${pages}`);
    assert.match(pages[0], /^online \(1\/\d\): user000, user001/);
    const listed = pages.flatMap((p) => p.replace(/^online \(\d\/\d\): /, "").split(", "));
    assert.deepEqual(listed, names);
    for (const member of members) {
      assert.ok(member.session.notices.every((t) => t.length <= MAX_TEXT_CHARS));
    }
  } finally {
    await lobby.closeAll("done");
  }
});

Deno.test("Lobby: a newcomer is not told of joins and leaves from before it came (coalesced notices still pending)", async () => {
  // Before: "carol left", waiting for the window's end, went to everyone in the lobby at the
  // flush, bob included, who came after carol had left (and saw her neither come nor go).
  const { lobby, join } = setup({
    messagesPerSecond: 20,
    messageBurst: 40,
    presenceNoticeMs: 60_000,
  });
  const alice = await join("alice");
  const carol = await join("carol"); // the window's first change: told at once
  await lobby.leave(carol.member); // pending until the window's end
  await new Promise((resolve) => setTimeout(resolve, 5));
  const bob = await join("bob");
  try {
    await lobby.receive(
      alice.member,
      fromMember(alice.member, message({ kind: "text", text: "hi" }, LOBBY)),
    ); // flushes
    assert.deepEqual(alice.session.notices.slice(1), ["carol joined", "carol left", "bob joined"]);
    assert.deepEqual(bob.session.notices, ["welcome bob; online: alice, bob"]);
  } finally {
    await lobby.closeAll("done");
  }
});

Deno.test("onlineBodies(): chunks of at most MAX_MEMBERS_PER_BODY names, each but the last marked more; more fits no other event", () => {
  // Before (interop finding 39) nothing marked the last chunk, so a client could not tell when
  // it knew the whole lobby.
  const names = Array.from({ length: 2 * MAX_MEMBERS_PER_BODY + 1 }, (_, i) => `user${i}`);
  const bodies = onlineBodies(names);
  assert.deepEqual(bodies.map((b) => [b.users.length, b.more]), [
    [MAX_MEMBERS_PER_BODY, true],
    [MAX_MEMBERS_PER_BODY, true],
    [1, undefined],
  ]);
  assert.deepEqual(bodies.flatMap((b) => b.users), names);
  assert.deepEqual(onlineBodies(["alice"]), [{
    kind: "members",
    event: "online",
    users: ["alice"],
  }]);
  for (const body of bodies) {
    assert.deepEqual(BodyShape.safeParse(body), { success: true, data: body });
  }
  for (const event of ["joined", "left"]) {
    const parsed = BodyShape.safeParse({ kind: "members", event, users: ["bob"], more: true });
    assert.equal(parsed.success, false, event);
  }
  assert.equal(
    BodyShape.safeParse({ kind: "members", event: "online", users: ["bob"], more: false }).success,
    false,
  );
});

Deno.test("the server's bodies that grow with who is online fit one record at their largest (PROTOCOL §6.2, §12.5)", () => {
  // A notice's or operator line's text is at most MAX_TEXT_CHARS (PROTOCOL §6.2; `who` pages,
  // the welcome and presence notices keep within it): 6 bytes a unit when each is escaped.
  const escaped = { kind: "operator", text: "\u0001".repeat(MAX_TEXT_CHARS), private: true };
  assert.equal(JSON.stringify(escaped).length, 6 * MAX_TEXT_CHARS + 44);
  assert.ok(JSON.stringify(escaped).length <= MAX_SERVER_BODY_BYTES, "the longest text");
  // The lobby's `online` list, in chunks of the longest names (32 characters, PKI.md "Names").
  const longest = Array.from(
    { length: 3 * MAX_MEMBERS_PER_BODY },
    (_, i) => `u${i}`.padEnd(32, "x"),
  );
  for (const body of onlineBodies(longest)) {
    assert.ok(JSON.stringify(body).length <= MAX_SERVER_BODY_BYTES, "an online chunk");
  }
});

Deno.test("a keys body is one of PROTOCOL §12.6's three shapes, nothing between them (interop finding 78)", () => {
  const device = "0123456789abcdef";
  const valid = [
    { kind: "keys", user: "bob", devices: [] },
    { kind: "keys", user: "bob", device, opks_left: 3 },
    { kind: "keys", user: "bob" },
  ];
  for (const body of valid) {
    assert.deepEqual(BodyShape.safeParse(body), { success: true, data: body });
  }
  const mixed = [
    { kind: "keys", user: "bob", device },
    { kind: "keys", user: "bob", opks_left: 3 },
    { kind: "keys", user: "bob", devices: [], device, opks_left: 3 },
    { kind: "keys", user: "bob", devices: [], opks_left: 3 },
  ];
  for (const body of mixed) {
    assert.equal(BodyShape.safeParse(body).success, false, JSON.stringify(body));
  }
});

Deno.test("Lobby.receive() in a cluster: refused only when the stream surely lacks the line; an unknown outcome ends the author's session unanswered (PROTOCOL §6.5, interop finding 55)", async () => {
  const outcomes: PublishOutcome[] = [
    { outcome: "stored", seq: 1 },
    { outcome: "not_stored", reason: "not connected to NATS: nothing was published" },
    { outcome: "unknown", reason: "no answer from the record stream" },
  ];
  for (const published of outcomes) {
    const cluster = {
      publishRecord: () => Promise.resolve(published),
      remoteUsers: () => [],
      announceLogin: () => {},
      announcePresence: () => {},
      lastSeen: () => undefined,
      processed: 0,
    };
    const limits = { messagesPerSecond: 20, messageBurst: 40, presenceNoticeMs: 0 };
    const lobby = new Lobby(() => {}, limits, cluster as unknown as ClusterLink);
    const session = new FakeSession("alice");
    const dropped: SecureChatError[] = [];
    const alice = new Member(
      session as unknown as ChatSession,
      "127.0.0.1:40000",
      limits,
      (error) => void dropped.push(error),
    );
    await lobby.join(alice);
    const line = message({ kind: "text", text: "hello" }, LOBBY);
    await lobby.receive(alice, fromMember(alice, line));
    // The publish is awaited in the member's window: let it settle.
    await Promise.all(alice.inFlight ?? []);
    const name = published.outcome;
    if (name === "not_stored") {
      assert.deepEqual(session.refusals, [{ of: line.seqno, code: "CLUSTER_UNAVAILABLE" }], name);
    } else assert.deepEqual(session.refusals, [], name);
    // Ended with an `error` the client is told (PROTOCOL §6.5), not dropped: a drop closes the
    // connection without a word, and the client could only say the link broke.
    assert.deepEqual(dropped, [], name);
    const ended = session.terminated;
    assert.deepEqual(ended.map((e) => e.code), name === "unknown" ? ["CLUSTER_UNAVAILABLE"] : []);
    if (name === "unknown") assert.match(ended[0].message, /may have reached its recipients/);
  }
});

/**
 * A session whose send queue holds `limit` bytes and empties only when the test's client reads:
 * a relay past it ends the session as the real one does (SLOW_CONSUMER).
 */
class SendQueueSession {
  readonly cert: Uint8Array;
  /** The author seqno of every record relayed, in order. */
  readonly relayed: number[] = [];
  closing = false;
  queued = 0;
  #drains: (() => void)[] = [];
  constructor(
    readonly username: string,
    readonly limit: number,
    readonly sessionId = crypto.randomUUID(),
  ) {
    this.cert = new TextEncoder().encode(`certificate of ${username}`);
  }
  get established() {
    return {
      conn: { queuedBytes: this.queued, maxQueuedBytes: this.limit },
      peer: { der: this.cert },
    };
  }

  #author?: AuthorCert;
  get peerAuthor(): AuthorCert {
    return this.#author ??= authorCertOf(this.cert);
  }
  send(): Promise<number> {
    return Promise.resolve(1); // notices: small, left out of the count
  }
  relay(prepared: PreparedRelay): number {
    const bytes = relaySharedBytes(prepared);
    if (this.queued + bytes > this.limit) {
      throw new SecureChatError(
        "SLOW_CONSUMER",
        `peer is not reading: ${this.queued} bytes already queued`,
      );
    }
    this.queued += bytes;
    this.relayed.push(wire(prepared).records[0].record.seqno);
    return this.relayed.length;
  }
  hasRoom(bytes: number, reserve = 0): boolean {
    return this.queued + bytes + this.limit * reserve <= this.limit;
  }
  drain(): Promise<void> {
    return new Promise((resolve) => this.#drains.push(resolve));
  }
  /** The client reads everything sent so far. */
  read(): void {
    this.queued = 0;
    for (const resolve of this.#drains.splice(0)) resolve();
  }
  refuse(): void {}
  close(): Promise<void> {
    this.closing = true;
    return Promise.resolve();
  }
}

/**
 * A lobby in a cluster whose stream is a list, alice in session, and bob's last node killed
 * before it handed him anything of the stream: at his login here he is replayed what alice said
 * before (`missed` long lines), against a `sendQueue`-byte send queue that empties only when the
 * test reads (`bob.read()`).
 */
async function replayedToBob(missed: number, sendQueue: number) {
  const stream: RecordEnvelope[] = [];
  const cluster = {
    processed: 0,
    publishRecord: (envelope: Omit<RecordEnvelope, "v" | "node">) => {
      stream.push({ v: 1, node: "n1", ...envelope });
      return Promise.resolve({ outcome: "stored", seq: stream.length });
    },
    remoteUsers: () => [],
    departedUsers: () => [],
    announceLogin: () => {},
    announcePresence: () => {},
    lastSeen: (user: string) =>
      user === "bob" ? { node: "n2", session: "lost", cursor: 0 } : undefined,
    async *replay(after: number, upTo: number) {
      for (let seq = after + 1; seq <= upTo; seq++) yield [stream[seq - 1], seq] as const;
    },
  };
  const limits = { messagesPerSecond: 10_000, messageBurst: 10_000, presenceNoticeMs: 0 };
  const logged: string[] = [];
  const lobby = new Lobby(
    (event) => void logged.push(event),
    limits,
    cluster as unknown as ClusterLink,
  );
  const member = (session: SendQueueSession, dropped: SecureChatError[]) =>
    new Member(session as unknown as ChatSession, "127.0.0.1:40000", limits, (error) => {
      dropped.push(error);
      session.closing = true;
    });
  const alice = member(new SendQueueSession("alice", 1 << 30), []);
  await lobby.join(alice);
  const long = (n: number) => `${n} ${"x".repeat(MAX_TEXT_CHARS - 10)}`;
  /** alice says line `n`; this node takes it from the stream unless `missed`. */
  const say = async (n: number, missed = false) => {
    await lobby.receive(alice, fromMember(alice, message({ kind: "text", text: long(n) }, LOBBY)));
    await Promise.all(alice.inFlight ?? []);
    const seq = stream.length;
    if (!missed) await lobby.clusterHandlers().record(stream[seq - 1], seq);
    cluster.processed = seq;
  };
  for (let n = 0; n < missed; n++) await say(n, true);
  const bob = new SendQueueSession("bob", sendQueue);
  const dropped: SecureChatError[] = [];
  const bobMember = member(bob, dropped);
  await lobby.join(bobMember);
  return { say, bob, bobMember, dropped, logged };
}

Deno.test("Lobby in a cluster without an offline queue: live records held during a replay reach the member at its pace afterwards, not in one turn (review9 R9-2's last case)", async () => {
  // 20 lines bob missed (~110 KB), against his 64 KiB send queue.
  const { say, bob, dropped, logged } = await replayedToBob(20, 64 * 1024);
  // The replay waits for bob to read; the lobby goes on meanwhile: 30 lines (~165 KB) held.
  for (let n = 20; n < 50; n++) await say(n);
  // bob reads whatever is sent, turn after turn, until every line has reached him.
  const expected = 20 + 30;
  for (let turn = 0; turn < 1000 && bob.relayed.length < expected && !dropped.length; turn++) {
    bob.read();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.deepEqual(dropped.map((e) => `${e.code}: ${e.message}`), []);
  assert.equal(bob.relayed.length, expected);
  assert.deepEqual(bob.relayed, [...bob.relayed].sort((a, b) => a - b));
  assert.ok(logged.includes("REPLAYED"));
});

Deno.test("Lobby in a cluster: a member that stops reading during its replay is dropped SLOW_CONSUMER once the stream records held for it keep 16 send queues, not held everything the cluster says (held17)", async () => {
  const sendQueue = 64 * 1024;
  // bob reads nothing: his replay of 20 lines waits with his send queue full.
  const { say, bob, bobMember, dropped } = await replayedToBob(20, sendQueue);
  // Meanwhile the lobby says ~2.2 MB, twice what 16 of bob's send queues hold.
  const said = 400;
  for (let n = 20; n < 20 + said && !dropped.length; n++) await say(n);
  assert.ok(
    dropped.length === 1,
    `bob's session is open and ${bobMember.held?.length} records ` +
      `(${bobMember.heldBytes} bytes) are held for him`,
  );
  assert.equal(dropped[0].code, "SLOW_CONSUMER");
  const [, count, bytes] = /(\d+) records, (\d+) bytes held back during its replay/
    .exec(dropped[0].message)!.map(Number);
  // Dropped at the bound: 16 send queues and the record that passed it, no more.
  const line = MAX_TEXT_CHARS + 1024;
  assert.ok(bytes > 16 * sendQueue && bytes <= 16 * sendQueue + line, `${bytes} bytes held`);
  assert.ok(count < said, `${count} records held`);
  // What was held goes with the drop, and nothing more is held for, or sent to, the closed
  // session: bob had only the first few of his 20 replayed lines (held ones come after all 20).
  assert.equal(bobMember.heldBytes, 0);
  await say(20 + said);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(bobMember.heldBytes, 0);
  assert.ok(bob.relayed.length > 0 && bob.relayed.length < 20, `${bob.relayed.length} relayed`);
});

Deno.test("Lobby in a cluster: users of a silent node forgotten without logging in again leave the end-to-end membership; one back elsewhere does not", async () => {
  const online = new Set<string>(["eve"]);
  const cluster = {
    processed: 0,
    publishRecord: () => Promise.resolve({ outcome: "stored", seq: 1 }),
    remoteUsers: () => [...online],
    departedUsers: () => [],
    announceLogin: () => {},
    announcePresence: () => {},
    lastSeen: () => undefined,
  };
  const limits = { messagesPerSecond: 20, messageBurst: 40, presenceNoticeMs: 0 };
  const lobby = new Lobby(() => {}, limits, cluster as unknown as ClusterLink);
  const told: Body[] = [];
  const session = new FakeSession("ann");
  session.send = (body: Body) => {
    told.push(body);
    return Promise.resolve(1);
  };
  const ann = new Member(session as unknown as ChatSession, "127.0.0.1:40000", limits, () => {});
  await lobby.join(ann);
  ann.e2e = true; // its device takes sender keys (PROTOCOL §12.5)
  told.length = 0;
  lobby.clusterHandlers().forgotten(["dan", "eve"]);
  assert.deepEqual(told, [{ kind: "members", event: "left", users: ["dan"] }]);
});

Deno.test("Lobby in a cluster: /who also lists the members failing over (a silent node's users not back yet) as reconnecting", async () => {
  const cluster = {
    processed: 0,
    publishRecord: () => Promise.resolve({ outcome: "stored", seq: 1 }),
    remoteUsers: () => ["bob"],
    departedUsers: () => ["dan", "bob"],
    announceLogin: () => {},
    announcePresence: () => {},
    lastSeen: () => undefined,
  };
  const limits = { messagesPerSecond: 20, messageBurst: 40, presenceNoticeMs: 0 };
  const lobby = new Lobby(() => {}, limits, cluster as unknown as ClusterLink);
  const session = new FakeSession("ann");
  const ann = new Member(session as unknown as ChatSession, "127.0.0.1:40000", limits, () => {});
  await lobby.join(ann);
  session.notices.length = 0;
  await lobby.receive(ann, fromMember(ann, message({ kind: "who" }, TO_SERVER)));
  assert.deepEqual(session.notices, ["online: ann, bob", "reconnecting: dan"]);
});

// review17 R17-1's same shape: the lobby's members, told to a device that joins the end-to-end
// lobby (PROTOCOL §12.5), come in bodies of 1000 names; all queued in one turn they could take
// more than the member's send queue holds and drop a member reading all along; a membership
// change made while they go waits for the last (§12.5: no `joined` or `left` before the list).
Deno.test("Lobby: the members list in parts goes to a device as its send queue drains, not in one turn", async () => {
  // 2,999 users of a silent node still in the lobby's membership, names of 32 characters: three
  // bodies of ~35 KB against a send queue of 64 KiB.
  const away = Array.from({ length: 2999 }, (_, i) => `user${String(i).padStart(28, "0")}`);
  const cluster = {
    processed: 0,
    publishRecord: () => Promise.resolve({ outcome: "stored", seq: 1 }),
    remoteUsers: () => [],
    departedUsers: () => away,
    announceLogin: () => {},
    announcePresence: () => {},
    lastSeen: () => undefined,
  };
  const directory = {
    publish: () => Promise.resolve({ left: 20, evicted: [] }),
  };
  const limits = { messagesPerSecond: 20, messageBurst: 40, presenceNoticeMs: 0 };
  const lobby = new Lobby(
    () => {},
    limits,
    cluster as unknown as ClusterLink,
    undefined,
    directory as unknown as KeyDirectory,
  );
  const session = new SendQueueSession("ann", 64 * 1024);
  const members: string[] = [];
  const events: string[] = [];
  session.send = (body?: Body) => {
    if (body?.kind !== "members") return Promise.resolve(1);
    const bytes = JSON.stringify(body).length;
    if (session.queued + bytes > session.limit) {
      return Promise.reject(new SecureChatError("SLOW_CONSUMER", "peer is not reading"));
    }
    session.queued += bytes;
    if (body.event === "online") members.push(...body.users);
    events.push(body.event === "online" ? `online${body.more ? " more" : ""}` : body.event);
    return Promise.resolve(1);
  };
  const dropped: SecureChatError[] = [];
  const ann = new Member(session as unknown as ChatSession, "127.0.0.1:40000", limits, (error) => {
    dropped.push(error);
    session.closing = true;
  });
  await lobby.join(ann);
  // Lobby lines on their way to ann, who reads all along: 40 KB of her 64 KiB queue (review18
  // R18-2: the first part went at once, beside them, and overflowed it).
  session.queued = 40_000;
  const publish: Body = {
    kind: "keys_publish",
    device: "0123456789abcdef",
    bundle: {} as Extract<Body, { kind: "keys_publish" }>["bundle"],
    opks: [],
    lobby: true,
  };
  const publishing = lobby.receive(ann, fromMember(ann, message(publish, TO_SERVER)));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(dropped.map((e) => `${e.code}: ${e.message}`), []);
  assert.equal(members.length, 0, "the first part waits for ann to read what is queued");
  // A membership change while the list is on its way is told after its last part (§12.5).
  lobby.clusterHandlers().forgotten([away[0]]);
  for (let turn = 0; turn < 100 && members.length < away.length + 1 && !dropped.length; turn++) {
    session.read();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await publishing;
  assert.deepEqual(dropped.map((e) => `${e.code}: ${e.message}`), []);
  assert.deepEqual(members, [...away, "ann"].sort());
  assert.deepEqual(events, ["online more", "online more", "online", "left"]);
});
