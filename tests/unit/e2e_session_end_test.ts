/**
 * An end-to-end device outlives the sessions it runs over (a `--reconnect` client, the page):
 * what it asked a session's server and never got answered must not hold up the next session.
 * The cluster kill -9 test caught it: a device-list fetch sent just before a node died kept
 * the client's input (and its reconnection) waiting for the fetch's whole timeout, and the
 * next session's lobby line then waited on the dead session's fetch for the same member.
 */
import assert from "node:assert/strict";
import { codeOf } from "../../lib/errors.ts";
import { E2eClient, MemoryStorage } from "../../lib/e2e/client.ts";
import { type Body, LOBBY, type MessageRecord, sealContent } from "../../lib/message/record.ts";
import { MAX_SKIP } from "../../lib/e2e/chain.ts";
import { takeE2eMessage } from "../../lib/e2e/chat.ts";
import { makePki } from "../../testkit/pki.ts";
import { publishedDevice } from "../helpers/published_device.ts";
import { SilentServer } from "../helpers/silent_server.ts";
import { pollUntil } from "../../testkit/server_process.ts";

const pki = await makePki(["alice", "bob", "carol", "dave"]);
globalThis.addEventListener("unload", () => Deno.removeSync(pki.dir, { recursive: true }));

async function aliceDevice(): Promise<E2eClient> {
  const id = await pki.identity("alice");
  return await E2eClient.open(new MemoryStorage(), {
    user: "alice",
    certDer: id.certDer,
    signingKey: id.signingKey,
  }, pki.trust);
}

/** How `promise` settled within `ms`: its error code, "resolved", or "pending". */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<string>((resolve) =>
    timer = setTimeout(() => resolve("pending"), ms)
  );
  try {
    return await Promise.race([promise.then(() => "resolved", codeOf), pending]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("e2e: a fetch on a session that ended fails at once, not at its 10 s timeout", async () => {
  const alice = await aliceDevice();
  const old = new SilentServer();
  const fetching = alice.prepare("bob", old);
  assert.equal(await settledWithin(fetching, 100), "pending");
  assert.deepEqual(old.fetches(), ["bob"]);
  alice.sessionEnded(old);
  assert.equal(await settledWithin(fetching, 500), "PROTOCOL_ERROR");
});

Deno.test("e2e: a new session's fetch does not wait on the one the old session sent", async () => {
  const alice = await aliceDevice();
  const old = new SilentServer();
  const stale = alice.prepare("bob", old);
  const fresh = new SilentServer();
  const current = alice.prepare("bob", fresh);
  assert.notEqual(current, stale, "the new session was handed the old session's fetch");
  assert.deepEqual(fresh.fetches(), ["bob"], "the new session asked its own server");
  alice.sessionEnded(old);
  alice.sessionEnded(fresh);
  assert.equal(await settledWithin(stale, 500), "PROTOCOL_ERROR");
  assert.equal(await settledWithin(current, 500), "PROTOCOL_ERROR");
});

Deno.test("e2e: a lobby line on a session that ended before the lobby's membership came fails at once", async () => {
  const alice = await aliceDevice();
  const old = new SilentServer();
  const preparing = alice.prepareLobby(old);
  assert.equal(await settledWithin(preparing, 100), "pending");
  alice.sessionEnded(old);
  assert.equal(await settledWithin(preparing, 500), "PROTOCOL_ERROR");
});

Deno.test("e2e: after a reconnection the lobby is the new session's online list; a member who left meanwhile gets no chain", async () => {
  const alice = await aliceDevice();
  const first = new SilentServer();
  alice.onMembers({ kind: "members", event: "online", users: ["alice", "bob", "carol"] });
  alice.sessionEnded(first);
  // carol logged out while alice was away: no `left` reached alice.
  const second = new SilentServer();
  const preparing = alice.prepareLobby(second);
  assert.equal(await settledWithin(preparing, 100), "pending");
  assert.deepEqual(second.fetches(), [], "a chain was begun before this session's list came");
  alice.onMembers({ kind: "members", event: "online", users: ["alice", "bob"] });
  assert.equal(await settledWithin(preparing, 100), "pending");
  assert.deepEqual(second.fetches(), ["bob"], "carol, gone, would have been sent a sender key");
  alice.sessionEnded(second);
  assert.equal(await settledWithin(preparing, 500), "resolved");
  assert.deepEqual((await preparing).unreadable.map((u) => u.user), ["bob"]);
});

/** The directory's answer to a fetch of `user`'s devices: the one device their client published. */
async function keysOf(user: string) {
  const { opk: _noPrekey, ...listed } = (await publishedDevice(pki, user)).listed;
  return { kind: "keys" as const, user, devices: [{ ...listed, lobby: true as const }] };
}

const bobKeys = () => keysOf("bob");

Deno.test("e2e: after a session ended, the next one's first lobby line waits for its members and sends a new chain (the last one's sender keys may have died with its node)", async () => {
  const alice = await aliceDevice();
  const keys = await bobKeys();
  const online = { kind: "members" as const, event: "online" as const, users: ["alice", "bob"] };
  const senderKeys = (server: SilentServer) => server.sent.filter((b) => b.kind === "sender_key");

  const old = new SilentServer();
  alice.onMembers(online);
  const first = alice.prepareLobby(old);
  await pollUntil(() => old.fetches().length || undefined, 2000, () => "no fetch of bob's keys");
  await alice.onKeys(keys, old);
  await first;
  assert.equal(senderKeys(old).length, 1);

  // The node dies with that sender key; the client logs in again elsewhere.
  alice.sessionEnded(old);
  const fresh = new SilentServer();
  const second = alice.prepareLobby(fresh);
  assert.equal(await settledWithin(second, 100), "pending", "it waits for this session's members");
  alice.onMembers(online);
  assert.equal(await settledWithin(second, 2000), "resolved");
  assert.equal(senderKeys(fresh).length, 1, "a new chain, sent in this session");
});

Deno.test("e2e: a members body out of the promised order is the server's PROTOCOL_ERROR: a joined or left before the whole online list, a second list after it (PROTOCOL §12.5, interop finding 51)", async () => {
  type Members = Extract<Body, { kind: "members" }>;
  const members = (event: Members["event"], users: string[], more?: true): Members => ({
    kind: "members",
    event,
    users,
    ...(more ? { more } : {}),
  });
  const refuses = (alice: E2eClient, body: Members, why: string) =>
    assert.throws(
      () => alice.onMembers(body),
      (e: unknown) => codeOf(e) === "PROTOCOL_ERROR",
      why,
    );
  const early = await aliceDevice();
  refuses(early, members("joined", ["bob"]), "a joined before any online list");
  const partial = await aliceDevice();
  partial.onMembers(members("online", ["alice"], true));
  refuses(partial, members("left", ["bob"]), "a left between two chunks of the list");
  const whole = await aliceDevice();
  whole.onMembers(members("online", ["alice", "bob"]));
  whole.onMembers(members("joined", ["carol", "dave"]));
  whole.onMembers(members("left", ["bob", "carol"]));
  refuses(whole, members("online", ["alice"]), "a second online list in one session");
  // A new session is sent its own list: after a reconnection it is the first again.
  const session = new SilentServer();
  whole.sessionEnded(session);
  whole.onMembers(members("online", ["alice", "dave"]));
});

Deno.test("e2e: a sender key answered queued (a member failing over) keeps the chain: the member gets one sender key per chain, not one per lobby line (PROTOCOL §6.5, §12.5)", async () => {
  // Before: `queued` retired the chain like a refusal, so every lobby line started a new chain
  // and queued one more sender key for the member, up to their queue's limit, and rekeyed
  // every other member each line. A queued key reaches its member before the author's later
  // lines (§6.6: at their login, merged into the replay, or at once if they are online).
  const alice = await aliceDevice();
  const keys = await bobKeys();
  const server = new SilentServer();
  const senderKeys = () => server.sent.filter((b) => b.kind === "sender_key").length;
  alice.onMembers({ kind: "members", event: "online", users: ["alice", "bob"] });
  const first = alice.prepareLobby(server);
  await server.fetched();
  await alice.onKeys(keys, server);
  await first;
  assert.equal(senderKeys(), 1);
  const keySeqno = server.sent.findIndex((b) => b.kind === "sender_key") + 1;
  const queued = { type: "queued" as const, seqno: 1, ts: Date.now(), of: keySeqno };
  assert.equal(await takeE2eMessage(alice, queued, server), true, "the layer's, not shown");
  const line = async () => {
    await alice.prepareLobby(server);
    const { record, k } = lobbyRecord();
    const envelope = await alice.wrap(record, k);
    assert.equal(envelope?.kind, "sender");
    return envelope as Extract<typeof envelope, { kind: "sender" }>;
  };
  const chainId = (await line()).id;
  for (let i = 1; i < 5; i++) assert.equal((await line()).id, chainId);
  assert.equal(senderKeys(), 1, "the queued member was sent the chain again");

  // The member reads from the queued key's position on, and a line more than MAX_SKIP (1000)
  // ahead of it ends their session (§12.5 step 4): a failover replays at most the newest 1000
  // records, so a chain queued for someone wraps at most 1000 lines; the next starts another.
  for (let i = 5; i < MAX_SKIP; i++) await alice.wrap(lobbyRecord().record, new Uint8Array(32));
  const after = await line();
  assert.notEqual(after.id, chainId);
  assert.equal(after.n, 0);
  assert.equal(senderKeys(), 2);
});

Deno.test("e2e: a sender key refused QUEUE_FULL leaves only that member out: the chain stays for the others, and the member is sent it again at most every 2 s, from its position then (PROTOCOL §6.5, §12.5)", async () => {
  // Before: a refusal retired the chain, so every lobby line started a new one and sent it to
  // every member, and the full queue refused the member's new key again: 3 lines in a lobby of
  // four sent 3 + 3 × 3 = 12 sender keys instead of 3 (and would have queued a key per line for
  // each other member who was away, and spent the author's message rate on keys).
  const alice = await aliceDevice();
  const server = new SilentServer();
  const members = ["bob", "carol", "dave"];
  const keysTo = (user: string) =>
    server.sent.filter((b, i) => b.kind === "sender_key" && server.sentTo[i] === `user:${user}`)
      .length;
  alice.onMembers({ kind: "members", event: "online", users: ["alice", ...members] });
  const first = alice.prepareLobby(server);
  await pollUntil(() => server.fetches().length === 3 || undefined, 2000, () => "no fetches");
  for (const user of members) await alice.onKeys(await keysOf(user), server);
  await first;
  assert.deepEqual(members.map(keysTo), [1, 1, 1]);
  // The server refuses every key sent to bob while his queue is full.
  const refusedSeqnos = new Set<number>();
  let answerSeqno = 0;
  const refuseBobsKeys = async () => {
    for (let i = 0; i < server.sent.length; i++) {
      if (server.sent[i].kind !== "sender_key" || server.sentTo[i] !== "user:bob") continue;
      if (refusedSeqnos.has(i + 1)) continue;
      refusedSeqnos.add(i + 1);
      const refused = {
        type: "refused" as const,
        seqno: ++answerSeqno,
        ts: Date.now(),
        of: i + 1,
        code: "QUEUE_FULL" as const,
      };
      // Not shown as "message N refused": the user wrote no sender_key record.
      assert.equal(
        await takeE2eMessage(alice, refused, server),
        true,
        "a refused key is the layer's",
      );
    }
  };
  const realNow = Date.now;
  let now = realNow();
  Date.now = () => now; // the 2 s between look-ups pass only when this test says so
  try {
    await refuseBobsKeys();
    let told: { user: string; reason: string }[] = [];
    const line = async () => {
      told = (await alice.prepareLobby(server)).unreadable;
      const envelope = await alice.wrap(lobbyRecord().record, new Uint8Array(32));
      return envelope as Extract<typeof envelope, { kind: "sender" }>;
    };
    const chainId = (await line()).id;
    assert.deepEqual(told, [{
      user: "bob",
      reason: "the server refused your key for them: QUEUE_FULL; offered again every 2 s",
    }], "the user is told before the next lobby line who cannot read it, and why");
    await refuseBobsKeys();
    for (let i = 0; i < 2; i++) {
      assert.equal((await line()).id, chainId, "the chain stays");
      assert.deepEqual(told, [], "told once per chain and member");
      await refuseBobsKeys();
    }
    assert.deepEqual(members.map(keysTo), [1, 1, 1], "no member was sent a key again");

    // Two seconds on, bob is looked up again and sent the chain from the next line's position.
    now += 2_001;
    const next = alice.prepareLobby(server);
    await pollUntil(() => server.fetches().length === 4 || undefined, 2000, () => "no refetch");
    assert.equal(server.fetches().at(-1), "bob");
    await alice.onKeys(await keysOf("bob"), server);
    await next;
    assert.deepEqual(members.map(keysTo), [2, 1, 1]);
    const resent = server.sent.findLast((b) => b.kind === "sender_key") as Extract<
      Body,
      { kind: "sender_key" }
    >;
    const after = await line();
    assert.deepEqual(told, [], "bob has the chain again: nothing to tell");
    assert.equal(after.id, chainId);
    assert.equal(resent.id, chainId);
    assert.equal(resent.n, after.n, "from the position of the next line");
    await refuseBobsKeys(); // the catch-up key is refused too: bob is left out again
    now += 2_001;
    const again = alice.prepareLobby(server);
    await pollUntil(() => server.fetches().length === 5 || undefined, 2000, () => "no refetch");
    await alice.onKeys(await keysOf("bob"), server);
    assert.deepEqual((await again).unreadable, [], "not told again under the same chain");
  } finally {
    Date.now = realNow;
  }
});

let lobbySeqno = 0;
/** A lobby record of alice's with its content key (its signature is not checked here). */
function lobbyRecord(): { record: MessageRecord; k: Uint8Array } {
  const { k, ct, c } = sealContent({ kind: "text", text: `line ${++lobbySeqno}` });
  const record: MessageRecord = {
    sid: "01".repeat(16),
    dir: "c2s",
    to: LOBBY,
    seqno: lobbySeqno,
    ts: Date.now(),
    ct,
    c,
    sig: new Uint8Array(64),
  };
  return { record, k };
}
