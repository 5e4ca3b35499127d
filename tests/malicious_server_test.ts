/**
 * Issue 13: "a malicious server built from lib parts can neither read nor alter a message,
 * nor make a recipient accept a message under another author". The server here is the real
 * ChatServer whose key log feeds a proxy that opens, rewrites and re-seals what it sends
 * (tests/helpers/hostile_server.ts): it holds every key an operator holds. The honest users
 * are real `securechat connect` processes. It keeps everything it relays and finds no line's
 * text; it hides a user's devices (the sender refuses to send readable); it flips bits in a
 * ciphertext, a ratchet wrap and a sender-key wrap, moves a line under another author's
 * certificate, and replays a line into a later session: each is refused with a code, and
 * nothing is shown as text that the author did not write.
 */
import assert from "node:assert/strict";
import { fromBase64, toBase64 } from "../lib/bytes.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { type LiveClient, liveLogins, pollUntil } from "../testkit/server_process.ts";
import {
  everythingReadable,
  type HostileServer,
  type Rewrite,
  rewriteServerBody,
  startHostileServer,
} from "./helpers/hostile_server.ts";
import { assertNoCanaries } from "./helpers/canaries.ts";

const PASSWORDS = { alice: "alice-password-1", bob: "bob-password-12", carol: "carol-password-1" };
type User = keyof typeof PASSWORDS;

const run = crypto.randomUUID().slice(0, 8);
const canary = (name: string) => `canary-${name}-${run}`;

/** Asserts that nothing the server holds (frames, files, log) has any of `canaries`. */
async function assertServerReadsNone(h: HostileServer, canaries: string[]): Promise<void> {
  const frames = everythingReadable(h.opened());
  for (const c of canaries) {
    assert.ok(!frames.includes(c), `${c} readable in a frame the server sent or received`);
  }
  const log = h.logs.map((e) => JSON.stringify(e)).join("\n");
  for (const dir of h.dirs) await assertNoCanaries(dir, log, canaries);
}

/** Waits for `client`'s stderr to show `pattern` (a session that ended by itself). */
function waitForError(client: LiveClient, pattern: RegExp): Promise<string> {
  return pollUntil(
    () => client.stderr.find((l) => pattern.test(l)),
    15_000,
    () => `no ${pattern} from the client; stderr:\n${client.stderr.join("\n")}`,
  );
}

/**
 * The end of a session the server tampered with: besides any refusal during it, the
 * server's receipt covers what the server itself sent, so the client's check of it fails
 * (TAMPERED). A server that also signed receipts over its rewrites would pass that check:
 * the refusals during the session are what this test is about.
 */
const RECEIPT_MISMATCH = /TAMPERED: receipt transcript_sha256 .* does not match/;

/** The certificate's name in a relay (`author_fp`, PROTOCOL §6.4.1). */
async function certOf(pki: TestPki, user: User): Promise<string> {
  return fingerprintOf((await pki.identity(user)).certDer);
}

/** Flips the first bit of a base64 string's last byte. */
function flip(b64: string): string {
  const bytes = fromBase64(b64);
  bytes[bytes.length - 1] ^= 0x01;
  return toBase64(bytes);
}

/**
 * A rewrite that changes the first message `edit` accepts (returns a replacement for) and
 * then stands down; `fired` says whether it has.
 */
function once(edit: Rewrite): Rewrite & { fired: boolean } {
  const rewrite = Object.assign((message: Record<string, unknown>, to: { conn: number }) => {
    if (rewrite.fired) return undefined;
    const out = edit(message, to);
    if (out) rewrite.fired = true;
    return out;
  }, { fired: false });
  return rewrite;
}

/** One record of a relay with its envelope (PROTOCOL §6.4, §12.6). */
type Item = { record: Record<string, unknown> & { to: string }; e2e?: Record<string, unknown> };

type Relay = Record<string, unknown> & {
  author_fp: string;
  cert?: string;
  sig: string;
  records: Item[];
};

/**
 * The relay of `author`'s lines to `to` (a user's name, or "lobby") that `reader` receives: one
 * whose records are all addressed so (a turn's lines of one batch travel in one relay, §6.4).
 */
function relayTo(
  message: Record<string, unknown>,
  to: { user?: string },
  reader: User,
  authorCert: string,
  recipient: string,
): Relay | undefined {
  if (message.type !== "relay" || to.user !== reader) return undefined;
  const relay = message as Relay;
  return relay.author_fp === authorCert && relay.records.every((i) => i.record.to === recipient)
    ? relay
    : undefined;
}

/** `relay` with each of its records' items rewritten by `edit`. */
function eachItem(relay: Relay, edit: (item: Item) => Item): Relay {
  return { ...relay, records: relay.records.map(edit) };
}

/**
 * The key directory lying to `from`: `of` has no devices (a `keys` answer's list emptied,
 * while `while()` holds).
 */
function hideDevices(o: { of: User; from: User; while?: () => boolean }): Rewrite {
  return (m, to) =>
    to.user === o.from && (o.while?.() ?? true)
      ? rewriteServerBody(
        m,
        (body) =>
          body.kind === "keys" && body.user === o.of && body.devices
            ? { ...body, devices: [] }
            : undefined,
      )
      : undefined;
}

async function setUp(users: User[]) {
  const pki = await makePki(users, "ed25519");
  const h = await startHostileServer(pki, PASSWORDS);
  const clients: LiveClient[] = [];
  const logins = liveLogins({
    pkiDir: pki.dir,
    workDir: pki.dir,
    password: (user) => PASSWORDS[user as User],
  }, clients);
  const login = (user: User) => logins(user, h.port);
  const tearDown = async () => {
    for (const c of clients) await c.end().catch(() => {});
    await h.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  };
  return { pki, h, login, tearDown };
}

Deno.test("malicious server: bits flipped in a wrap, a sender-key wrap or a ciphertext, or a line moved under another author, are refused and never shown; it reads no line", async () => {
  const { pki, h, login, tearDown } = await setUp(["alice", "bob", "carol"]);
  try {
    const aliceCert = await certOf(pki, "alice");
    // The certificates carol's session was sent (PROTOCOL §6.4.1), for (d) below.
    const introducedToCarol = new Set<string>();
    h.rewrites.push((m, to) => {
      if (m.type === "relay" && to.user === "carol" && m.cert) {
        introducedToCarol.add(m.author_fp as string);
      }
      return undefined;
    });
    const bob = await login("bob");
    const alice = await login("alice");
    const carol = await login("carol");
    const c = {
      first: canary("first"),
      lobby: canary("lobby"),
      wrap: canary("wrap"),
      senderWrap: canary("sender-wrap"),
      after: canary("after"),
      ct: canary("ct"),
      relabel: canary("relabel"),
    };

    // Honest first: a private line (first contact) and a lobby line (sender keys).
    await alice.send(`/msg bob ${c.first}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${c.first}`));
    await alice.send(c.lobby);
    await bob.waitForLine((l) => l.includes(`alice ✓ ${c.lobby}`));
    await carol.waitForLine((l) => l.includes(`alice ✓ ${c.lobby}`));

    // (c) One bit of the ratchet wrap of bob's device: bob has no key for it, says so, and
    // the session goes on.
    const wrap = once((m, to) => {
      const relay = relayTo(m, to, "bob", aliceCert, "user:bob");
      if (!relay?.records.every((item) => item.e2e?.kind === "ratchet")) return undefined;
      return eachItem(relay, (item) => {
        const wraps = item.e2e!.wraps as { w: string }[];
        return { ...item, e2e: { ...item.e2e, wraps: wraps.map((w) => ({ ...w, w: flip(w.w) })) } };
      });
    });
    h.rewrites.push(wrap);
    let from = bob.stdout.length;
    await alice.send(`/msg bob ${c.wrap}`);
    const noKey = await bob.waitForLine((l) => l.includes("cannot decrypt"), 20_000, from);
    assert.ok(wrap.fired);
    assert.match(noKey, /alice \(private\)/);
    assert.match(noKey, /no key for this message/);

    // (c) One bit of the sender-key wrap of a lobby line, to carol only: bob reads it, carol
    // has no key for it.
    const senderWrap = once((m, to) => {
      const relay = relayTo(m, to, "carol", aliceCert, "lobby");
      if (!relay?.records.every((item) => item.e2e?.kind === "sender")) return undefined;
      return eachItem(
        relay,
        (item) => ({ ...item, e2e: { ...item.e2e, w: flip(item.e2e!.w as string) } }),
      );
    });
    h.rewrites.push(senderWrap);
    from = carol.stdout.length;
    await alice.send(c.senderWrap);
    await bob.waitForLine((l) => l.includes(`alice ✓ ${c.senderWrap}`));
    const carolNoKey = await carol.waitForLine((l) => l.includes("cannot decrypt"), 20_000, from);
    assert.ok(senderWrap.fired);
    assert.match(carolNoKey, /alice/);

    // Both conversations survive the tampering.
    await alice.send(`/msg bob ${c.after}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${c.after}`));

    // (c) One bit of the ciphertext: the author's signature covers it, so bob's session ends
    // with SIG_FAIL and the line is never shown.
    const ct = once((m, to) => {
      const relay = relayTo(m, to, "bob", aliceCert, "user:bob");
      if (!relay) return undefined;
      return eachItem(relay, (item) => ({
        ...item,
        record: { ...item.record, ct: flip(item.record.ct as string) },
      }));
    });
    h.rewrites.push(ct);
    await alice.send(`/msg bob ${c.ct}`);
    await waitForError(bob, /error: SIG_FAIL/);
    const bobEnd = await bob.end();
    assert.ok(ct.fired);
    assert.equal(bobEnd.code, 1);

    // (d) alice's lobby line handed to carol under bob's certificate — named if carol's
    // session holds it, else introduced: bob never signed it, so carol refuses it (SIG_FAIL)
    // and never shows it as bob's (or anyone's).
    const bobFp = await certOf(pki, "bob");
    const bobCert = toBase64((await pki.identity("bob")).certDer);
    const relabel = once((m, to) => {
      const relay = relayTo(m, to, "carol", aliceCert, "lobby");
      if (!relay) return undefined;
      const { cert: _alice, ...rest } = relay;
      return introducedToCarol.has(bobFp)
        ? { ...rest, author_fp: bobFp }
        : { ...rest, author_fp: bobFp, cert: bobCert };
    });
    h.rewrites.push(relabel);
    await alice.send(c.relabel);
    await waitForError(carol, /error: SIG_FAIL/);
    const carolEnd = await carol.end();
    assert.ok(relabel.fired);
    assert.equal(carolEnd.code, 1);
    assert.ok(!/bob \u2713/.test(carolEnd.stdout), carolEnd.stdout);

    assert.equal((await alice.end()).code, 0);
    for (const text of [c.wrap, c.ct]) assert.ok(!bobEnd.stdout.includes(text), bobEnd.stdout);
    for (const text of [c.senderWrap, c.relabel]) {
      assert.ok(!carolEnd.stdout.includes(text), carolEnd.stdout);
    }
    // (a) Everything it relayed, every frame both ways, its files and log: no line's text.
    await assertServerReadsNone(h, Object.values(c));
  } finally {
    await tearDown();
  }
});

Deno.test("malicious server: hiding a user's devices gets nothing readable — a private line is not sent (NO_E2E_KEYS), a lobby line still goes end to end to the others", async () => {
  const { h, login, tearDown } = await setUp(["alice", "bob", "carol"]);
  try {
    const bob = await login("bob");
    const carol = await login("carol");
    // The key directory lies to alice: bob has no devices.
    h.rewrites.push(hideDevices({ of: "bob", from: "alice" }));
    const alice = await login("alice");
    const c = { never: canary("never"), lobby: canary("lobby-hidden") };

    // (b) A first line to bob: refused, nothing leaves.
    await alice.send(`/msg bob ${c.never}`);
    const refusal = await alice.waitForLine((l) => l.includes("not sent to bob"));
    assert.match(refusal, /NO_E2E_KEYS/);
    assert.match(
      refusal,
      /bob has no device with valid end-to-end keys \(none published, or their certificate was revoked\): nothing was sent/,
    );

    // A lobby line: carol reads it; bob gets no sender key, and says he has no key for it.
    const bobFrom = bob.stdout.length;
    await alice.send(c.lobby);
    await alice.waitForLine((l) => l.includes("bob cannot read your lobby lines"));
    await carol.waitForLine((l) => l.includes(`alice ✓ ${c.lobby}`));
    const noKey = await bob.waitForLine((l) => l.includes("cannot decrypt"), 20_000, bobFrom);
    assert.match(noKey, /alice/);

    // alice's transcript holds the lying `keys` answers: the server's receipt does not match.
    const aliceEnd = await alice.end();
    assert.equal(aliceEnd.code, 1);
    assert.match(aliceEnd.stderr, RECEIPT_MISMATCH);
    for (const client of [bob, carol]) assert.equal((await client.end()).code, 0);
    assert.ok(!bob.stdout.join("\n").includes(c.never));
    await assertServerReadsNone(h, Object.values(c));
  } finally {
    await tearDown();
  }
});

Deno.test("malicious server: a contact whose devices all vanish is refused loudly, and the conversation resumes when they are back", async () => {
  const { h, login, tearDown } = await setUp(["alice", "bob"]);
  try {
    const bob = await login("bob");
    const alice = await login("alice");
    const c = { before: canary("before"), hidden: canary("hidden"), back: canary("back") };
    await alice.send(`/msg bob ${c.before}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${c.before}`));

    let hiding = true;
    h.rewrites.push(hideDevices({ of: "bob", from: "alice", while: () => hiding }));
    // `/verify` asks for bob's devices now (a line would after a minute).
    await alice.send("/verify bob");
    await alice.waitForLine((l) => l.includes("the server now lists no device of bob"));
    await alice.send(`/msg bob ${c.hidden}`);
    const refusal = await alice.waitForLine((l) => l.includes("not sent to bob"));
    assert.match(refusal, /NO_E2E_KEYS: WARNING: the server now lists no device of bob/);
    await alice.waitForLine((l) => l.includes("hint:") && l.includes("/verify bob"));

    // The server relents: the same conversation goes on (its sessions were kept).
    hiding = false;
    await alice.send(`/msg bob ${c.back}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${c.back}`));
    assert.match((await alice.end()).stderr, RECEIPT_MISMATCH);
    assert.equal((await bob.end()).code, 0);
    assert.ok(!bob.stdout.join("\n").includes(c.hidden));
    await assertServerReadsNone(h, Object.values(c));
  } finally {
    await tearDown();
  }
});

Deno.test("malicious server: a line of an earlier session replayed into a later one is refused by the high-water marks", async () => {
  const { pki, h, login, tearDown } = await setUp(["alice", "bob"]);
  try {
    const aliceCert = await certOf(pki, "alice");
    const c = { old: canary("old"), next: canary("next") };
    const bob = await login("bob");
    const alice = await login("alice");
    // The server keeps what it relayed to bob...
    let kept: Relay | undefined;
    h.rewrites.push((m, to) => {
      kept ??= relayTo(m, to, "bob", aliceCert, "user:bob");
      return undefined;
    });
    await alice.send(`/msg bob ${c.old}`);
    await bob.waitForLine((l) => l.includes(`alice (private) ✓ ${c.old}`));
    assert.equal((await bob.end()).code, 0);
    assert.ok(kept);

    // ...and in bob's next session hands it to him again in place of alice's next line.
    const replay = once((m, to) => {
      const relay = relayTo(m, to, "bob", aliceCert, "user:bob");
      // Introducing alice's certificate where the relay it replaces would have (§6.4.1).
      return relay && { ...kept!, seqno: relay.seqno, ts: relay.ts, cert: relay.cert };
    });
    h.rewrites.unshift(replay);
    const bobAgain = await login("bob");
    await alice.send(`/msg bob ${c.next}`);
    await pollUntil(() => replay.fired || undefined, 20_000, () => "nothing replayed");
    assert.equal((await alice.end()).code, 0);
    const end = await bobAgain.end();
    assert.match(end.stderr, RECEIPT_MISMATCH);
    // It reached bob's client, which recorded it (the hop happened) and knew it as a line
    // accepted in an earlier session.
    const transcript = /transcript: (.*)$/m.exec(end.stderr)![1];
    assert.ok((await Deno.readTextFile(transcript)).includes(kept.sig));
    // Recorded (the hop happened) but never shown again, and not taken for alice's new line.
    assert.ok(!end.stdout.includes(c.old), end.stdout);
    assert.ok(!end.stdout.includes(c.next), end.stdout);
    await assertServerReadsNone(h, Object.values(c));
  } finally {
    await tearDown();
  }
});
