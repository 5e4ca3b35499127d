/**
 * lib/server/lobby.ts directly, with stand-in sessions that record what the lobby sends:
 * who hears what, takeover by a second login, private messages, the rate limit, dropping a
 * member whose sends fail, and the relay window.
 */
import assert from "node:assert/strict";
import { toBase64 } from "../../lib/bytes.ts";
import { SecureChatError } from "../../lib/errors.ts";
import type { LogFields } from "../../lib/log.ts";
import { Lobby, type LobbyLimits, Member, RELAY_WINDOW } from "../../lib/server/lobby.ts";
import type { AuthorRecord } from "../../lib/session/relay.ts";
import type { ChatSession, ReceivedMessage } from "../../lib/session/session.ts";
import type { MsgBody, MsgBodyJson } from "../../lib/wire/messages.ts";

/** The part of ChatSession the lobby uses, recording every send. */
class FakeSession {
  readonly sent: { body: MsgBodyJson; author?: AuthorRecord }[] = [];
  readonly cert: Uint8Array;
  closing = false;
  closeCalls = 0;
  queuedBytes = 0;
  /** What the next sends throw, if set. */
  failure: unknown;
  /** Sends wait for this before they complete, if set. */
  gate: Promise<void> | undefined;

  constructor(readonly username: string, readonly sessionId = crypto.randomUUID()) {
    this.cert = new TextEncoder().encode(`certificate of ${username}`);
  }

  get established() {
    return { conn: { queuedBytes: this.queuedBytes }, peer: { der: this.cert } };
  }

  async send(body: MsgBodyJson, author?: AuthorRecord): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    await this.gate;
    this.sent.push({ body, author });
  }

  close(): Promise<void> {
    this.closeCalls++;
    this.closing = true;
    return Promise.resolve();
  }

  /** The texts of the notices received, in order. */
  notices(): string[] {
    return this.sent.flatMap(({ body }) => body.kind === "notice" ? [body.text] : []);
  }

  relays(): { body: MsgBodyJson; author?: AuthorRecord }[] {
    return this.sent.filter(({ body }) => body.kind === "relay");
  }
}

interface Joined {
  session: FakeSession;
  member: Member;
  dropped: SecureChatError[];
}

function setup(limits: LobbyLimits = { messagesPerSecond: 20, messageBurst: 40 }) {
  const logged: { event: string; fields?: LogFields }[] = [];
  const lobby = new Lobby((event, fields) => void logged.push({ event, fields }), limits);
  const join = async (username: string): Promise<Joined> => {
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
/** A verified message from a member, as the session hands it to the lobby. */
function message(body: MsgBody): ReceivedMessage {
  seqno++;
  const sealed = {
    seqno,
    ts: 1_700_000_000_000 + seqno,
    ct: crypto.getRandomValues(new Uint8Array(32)),
    sig: crypto.getRandomValues(new Uint8Array(64)),
  };
  return {
    body,
    seqno,
    ts: sealed.ts,
    sealed,
    messageKey: crypto.getRandomValues(new Uint8Array(16)),
  };
}

Deno.test("Lobby.join(): the newcomer is welcomed with who is online, the others told", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  assert.deepEqual(alice.session.notices(), ["welcome alice; online: alice", "bob joined"]);
  assert.deepEqual(bob.session.notices(), ["welcome bob; online: alice, bob"]);
  assert.deepEqual(lobby.names(), ["alice", "bob"]);
});

Deno.test("Lobby.join(): a second login takes over, case-insensitively; the old leave is a no-op", async () => {
  const { lobby, logged, join } = setup();
  const first = await join("alice");
  const bob = await join("bob");
  const second = await join("Alice");
  assert.deepEqual(lobby.names(), ["Alice", "bob"]);
  assert.equal(first.session.notices().at(-1), "you logged in elsewhere; closing");
  assert.equal(first.session.closeCalls, 1);
  const replaced = logged.find((e) => e.event === "SESSION_REPLACED");
  assert.deepEqual(replaced?.fields, { user: "alice", session: first.session.sessionId });
  // The old session ends later and leaves: that must not remove the new one.
  await lobby.leave(first.member);
  assert.deepEqual(lobby.names(), ["Alice", "bob"]);
  assert.ok(!bob.session.notices().some((n) => n.endsWith("left")));
  await lobby.leave(second.member);
  assert.deepEqual(lobby.names(), ["bob"]);
  assert.equal(bob.session.notices().at(-1), "Alice left");
});

Deno.test("Lobby.receive(): a text is relayed to every other member with its author record", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  const m = message({ kind: "text", text: "hello all" });
  await lobby.receive(alice.member, m);
  await Promise.all(alice.member.inFlight);
  assert.equal(alice.session.relays().length, 0, "never echoed to its author");
  for (const other of [bob, carol]) {
    const [relay] = other.session.relays();
    assert.deepEqual(relay.body, {
      kind: "relay",
      cert: toBase64(alice.session.cert),
      seqno: m.sealed.seqno,
      ts: m.sealed.ts,
      ct: toBase64(m.sealed.ct),
      sig: toBase64(m.sealed.sig),
      key: toBase64(m.messageKey),
    });
    assert.deepEqual(relay.author, { cert: alice.session.cert, ...m.sealed });
  }
});

Deno.test("Lobby.receive(): `to` reaches one member, case-insensitively; an absent one is reported", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  await lobby.receive(alice.member, message({ kind: "text", text: "psst", to: "BOB" }));
  await lobby.receive(alice.member, message({ kind: "text", text: "hello?", to: "dave" }));
  await Promise.all(alice.member.inFlight);
  assert.equal(bob.session.relays().length, 1);
  assert.equal(carol.session.relays().length, 0);
  assert.equal(alice.session.notices().at(-1), "dave is not online");
});

Deno.test("Lobby.receive(): who answers the asker alone; other kinds are ignored", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const before = bob.session.sent.length;
  await lobby.receive(alice.member, message({ kind: "who" }));
  await lobby.receive(alice.member, message({ kind: "notice", text: "I am the server" }));
  await lobby.receive(alice.member, message({ kind: "operator", text: "me too" }));
  assert.equal(alice.session.notices().at(-1), "online: alice, bob");
  assert.equal(bob.session.sent.length, before);
});

Deno.test("Lobby.receive(): past the burst, texts are dropped; one notice and one RATE_LIMITED per 10 s", async () => {
  const { lobby, logged, join } = setup({ messagesPerSecond: 0.001, messageBurst: 3 });
  const alice = await join("alice");
  const bob = await join("bob");
  for (let i = 0; i < 5; i++) {
    await lobby.receive(alice.member, message({ kind: "text", text: `m${i}` }));
  }
  await Promise.all(alice.member.inFlight);
  assert.equal(bob.session.relays().length, 3);
  // Two dropped, one answer (issue 11 item 6: a flood costs no reply per message).
  const slowDowns = alice.session.notices().filter((n) => n.startsWith("slow down"));
  assert.deepEqual(slowDowns, ["slow down: messages are being dropped"]);
  const limited = logged.filter((e) => e.event === "RATE_LIMITED");
  assert.equal(limited.length, 1);
  assert.equal(limited[0].fields?.user, "alice");
});

Deno.test("Lobby: a member whose send fails is dropped with that code; the others still hear", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  const carol = await join("carol");
  bob.session.failure = new SecureChatError("SLOW_CONSUMER", "peer is not reading");
  carol.session.failure = new TypeError("something unexpected");
  const dave = await join("dave");
  await lobby.receive(alice.member, message({ kind: "text", text: "still there?" }));
  await Promise.all(alice.member.inFlight);
  assert.deepEqual(bob.dropped.map((e) => e.code), ["SLOW_CONSUMER", "SLOW_CONSUMER"]);
  assert.equal(carol.dropped.length, 2);
  assert.ok(carol.dropped.every((e) => e instanceof SecureChatError && e.code === "INTERNAL"));
  assert.equal(dave.session.relays().length, 1);
  assert.equal(alice.session.notices().at(-1), "dave joined");
});

Deno.test("Lobby: a closing member is sent nothing and not dropped", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  bob.session.closing = true;
  bob.session.failure = new SecureChatError("PROTOCOL_ERROR", "session is closing");
  await lobby.receive(alice.member, message({ kind: "text", text: "bye" }));
  await Promise.all(alice.member.inFlight);
  assert.deepEqual(bob.dropped, []);
});

Deno.test("Lobby.operatorSays(): to everyone, or to one member", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  await lobby.operatorSays("maintenance at noon");
  await lobby.operatorSays("just you", "Bob");
  assert.deepEqual(alice.session.sent.at(-1)?.body, {
    kind: "operator",
    text: "maintenance at noon",
  });
  assert.deepEqual(bob.session.sent.at(-1)?.body, {
    kind: "operator",
    text: "just you",
    to: "Bob",
  });
  assert.equal(alice.session.sent.filter(({ body }) => body.kind === "operator").length, 1);
});

Deno.test("Lobby.receive(): at most RELAY_WINDOW relays of one sender in flight", async () => {
  const { lobby, join } = setup({ messagesPerSecond: 1, messageBurst: RELAY_WINDOW * 2 });
  const alice = await join("alice");
  const bob = await join("bob");
  let open!: () => void;
  bob.session.gate = new Promise((resolve) => open = resolve);
  for (let i = 0; i < RELAY_WINDOW - 1; i++) {
    await lobby.receive(alice.member, message({ kind: "text", text: `m${i}` }));
  }
  assert.equal(alice.member.inFlight.size, RELAY_WINDOW - 1);
  let returned = false;
  const last = lobby.receive(alice.member, message({ kind: "text", text: "one too many" }))
    .then(() => returned = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(returned, false, "the sender waits while its window is full");
  open();
  await last;
  await Promise.all(alice.member.inFlight);
  assert.equal(bob.session.relays().length, RELAY_WINDOW);
});

Deno.test("Lobby.queueStats() and closeAll(why): each member is told why, then closed", async () => {
  const { lobby, join } = setup();
  const alice = await join("alice");
  const bob = await join("bob");
  alice.session.queuedBytes = 100;
  bob.session.queuedBytes = 300;
  assert.deepEqual(lobby.queueStats(), { members: 2, queuedBytes: 400, maxQueuedBytes: 300 });
  await lobby.closeAll("the server is shutting down");
  assert.deepEqual([alice.session.closeCalls, bob.session.closeCalls], [1, 1]);
  for (const member of [alice, bob]) {
    assert.equal(member.session.notices().at(-1), "the server is shutting down");
  }
  assert.deepEqual(new Lobby(() => {}).queueStats(), {
    members: 0,
    queuedBytes: 0,
    maxQueuedBytes: 0,
  });
});
