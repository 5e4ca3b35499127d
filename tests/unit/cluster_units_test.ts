/** The pure parts of issue 15: reconnect policy, relay dedupe, cluster config and messages. */
import assert from "node:assert/strict";
import { Backoff, LineSource, parseServers, STOPPED } from "../../commands/_reconnect.ts";
import { isPermanent, isTakeover, worthReconnecting } from "../../lib/session/reconnect.ts";
import type { SessionEnd } from "../../lib/session/session.ts";
import { resolveClusterConfig } from "../../lib/cluster/config.ts";
import { listedNames } from "../../lib/cluster/link.ts";
import {
  encodeClusterMessage,
  parseClusterMessage,
  type Presence,
  PresenceSchema,
  RecordEnvelopeSchema,
  SUBJECTS,
} from "../../lib/cluster/messages.ts";
import { decodeClusterRecord, encodeClusterRecord } from "../../lib/server/cluster_record.ts";
import { codeOf, SecureChatError } from "../../lib/errors.ts";
import { blockLength, parseProxyHeader } from "../../lib/server/proxy_protocol.ts";
import { clusterUncertainty, OPEN_WINDOW_MS, UnansweredLines } from "../../commands/_unanswered.ts";

Deno.test("Backoff.next() doubles up to the cap, each wait jittered within [d/2, d]", () => {
  for (const random of [() => 0, () => 0.999999]) {
    const backoff = new Backoff(250, 10_000, random);
    const waits = Array.from({ length: 8 }, () => backoff.next());
    const ceilings = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
    waits.forEach((wait, i) => {
      assert.ok(wait >= ceilings[i] / 2 && wait <= ceilings[i], `${wait} vs ${ceilings[i]}`);
    });
    backoff.reset();
    assert.ok(backoff.next() <= 250);
  }
});

Deno.test("parseServers() takes host:port, [v6]:port and bare hosts; refuses the rest with USAGE", () => {
  assert.deepEqual(parseServers(undefined, "h", 1), [{ host: "h", port: 1 }]);
  assert.deepEqual(parseServers(["a.example:5", "[::1]:6", "b"], "h", 7), [
    { host: "a.example", port: 5 },
    { host: "::1", port: 6 },
    { host: "b", port: 7 },
  ]);
  for (const bad of ["a:0", "a:70000", "a b:1", "::1:5", ":5", "a:5:6"]) {
    assert.throws(() => parseServers([bad], "h", 1), (e) => codeOf(e) === "USAGE", bad);
  }
});

Deno.test("worthReconnecting(): drops and passing failures yes; takeover and refusals no", () => {
  const end = (outcome: "closed" | "peer_gone" | "error", code?: string): SessionEnd => ({
    outcome,
    code,
    // What the session reports for a clean close with a code (PROTOCOL §5.2, §7.1).
    ...(outcome === "closed" && code ? { closeCode: code as SessionEnd["closeCode"] } : {}),
    transcriptPath: "t",
  });
  assert.equal(worthReconnecting(end("peer_gone")), true);
  assert.equal(worthReconnecting(end("closed")), true);
  assert.equal(worthReconnecting(end("error", "TIMEOUT")), true);
  // REVOKED: the server ended the session because our certificate was revoked; a new login
  // would only be refused (BAD_CERT).
  for (const code of ["AUTH_FAIL", "BAD_CERT", "REVOKED", "SIG_FAIL", "TAMPERED"]) {
    assert.equal(worthReconnecting(end("error", code)), false, code);
  }
  // Closed cleanly because this user logged in again (PROTOCOL §7.1: a new login would take
  // the session back), or the server's own certificate lapsed (§5.2): it takes no session
  // until its operator acts, and refuses new connections with the same code.
  for (const code of ["SESSION_TAKEN_OVER", "SERVER_CERT_EXPIRED", "SERVER_CERT_REVOKED"]) {
    assert.equal(worthReconnecting(end("closed", code)), false, code);
    assert.equal(isPermanent(new SecureChatError(code as never, "refused")), true, code);
  }
  // The close's code stands when the receipt exchange after it failed.
  const timedOut: SessionEnd = { ...end("error", "TIMEOUT"), closeCode: "SESSION_TAKEN_OVER" };
  assert.equal(worthReconnecting(timedOut), false);
  assert.equal(isTakeover(timedOut), true);
  assert.equal(isTakeover(end("closed", "SERVER_CERT_EXPIRED")), false);
  assert.equal(isTakeover(end("closed")), false);
});

Deno.test("LineSource.next() keeps a read that outlived its session for the next one", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  async function* lines() {
    await gate;
    yield "typed while reconnecting";
  }
  const source = new LineSource(lines());
  assert.equal(await source.next(Promise.resolve()), STOPPED);
  release();
  assert.equal(await source.next(new Promise(() => {})), "typed while reconnecting");
  assert.equal(await source.next(new Promise(() => {})), null);
});

Deno.test("LineSource.unread(): a line its session ended before sending is read again first, and listed until then", async () => {
  async function* lines() {
    yield "first";
    yield "second";
  }
  const source = new LineSource(lines());
  const forever = new Promise(() => {});
  assert.equal(await source.next(forever), "first");
  source.unread("first");
  assert.deepEqual(source.unsent, ["first"]);
  assert.equal(await source.next(forever), "first");
  assert.deepEqual(source.unsent, []);
  assert.equal(await source.next(forever), "second");
  assert.equal(await source.next(forever), null);
});

Deno.test("resolveClusterConfig(): flags over .env keys; node name and nats:// URLs checked", () => {
  assert.equal(resolveClusterConfig({}, {}), undefined);
  assert.deepEqual(
    resolveClusterConfig({}, {
      SECURECHAT_CLUSTER: "nats://a:1, nats://b:2",
      SECURECHAT_NODE: "n1",
    }),
    { servers: ["nats://a:1", "nats://b:2"], node: "n1" },
  );
  assert.deepEqual(
    resolveClusterConfig({ cluster: ["nats://c:3"], node: "x" }, { SECURECHAT_NODE: "n1" }),
    { servers: ["nats://c:3"], node: "x" },
  );
  for (
    const [flags, env] of [
      [{ node: "n1" }, {}],
      [{ cluster: ["nats://a:1"] }, {}],
      [{ cluster: ["nats://a:1"], node: "bad name" }, {}],
      [{ cluster: ["tcp://a:1"], node: "n1" }, {}],
    ] as const
  ) {
    assert.throws(
      () => resolveClusterConfig(flags as never, env),
      (e) => codeOf(e) === "USAGE",
      JSON.stringify(flags),
    );
  }
});

Deno.test("parseClusterMessage() refuses wrong versions, unknown members and bad names", () => {
  const presence = { v: 1, node: "n1", at: 1, cursor: 0, users: [] };
  assert.deepEqual(parseClusterMessage(encodeClusterMessage(presence), PresenceSchema), presence);
  for (
    const bad of [
      { ...presence, v: 2 },
      { ...presence, extra: 1 },
      { ...presence, node: "n.1" },
      { ...presence, users: [{ name: "../x", session: "s", since: 1 }] },
    ]
  ) {
    assert.throws(
      () => parseClusterMessage(encodeClusterMessage(bad), PresenceSchema),
      (e) => codeOf(e) === "PROTOCOL_ERROR",
    );
  }
  assert.throws(
    () => parseClusterMessage(new Uint8Array([0xff]), RecordEnvelopeSchema),
    (e) => codeOf(e) === "PROTOCOL_ERROR",
  );
  // A name with a dot still makes one NATS token.
  assert.equal(SUBJECTS.user("A.b"), "securechat.record.user.612e62");
});

Deno.test("decodeClusterRecord() returns what encodeClusterRecord() wrote; refuses foreign bodies", () => {
  const b64 = (n: number) => btoa(String.fromCharCode(...new Uint8Array(n).fill(3)));
  const relay = {
    cert: b64(2),
    record: {
      sid: "0a".repeat(16),
      dir: "c2s" as const,
      to: "lobby",
      seqno: 3,
      ts: 4,
      ct: b64(16),
      c: b64(32),
      sig: b64(64),
      batch: { i: 0, n: 1, path: [] },
    },
    k: b64(32),
  };
  const body = { kind: "notice" as const, text: "hi" };
  assert.deepEqual(decodeClusterRecord(encodeClusterRecord({ relay })), { relay });
  assert.deepEqual(decodeClusterRecord(encodeClusterRecord({ body })), { body });
  for (
    const bad of [
      { body: { kind: "nope" } },
      { body, extra: 1 },
      { relay: { ...relay, k: b64(16) } },
      "x",
    ]
  ) {
    assert.throws(() => decodeClusterRecord(bad), (e) => codeOf(e) === "PROTOCOL_ERROR");
  }
});

Deno.test("parseProxyHeader() reads PROXY v2 TCP over IPv4 and IPv6, LOCAL; refuses the rest", () => {
  const SIG = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  const header = (verCmd: number, fam: number, block: number[]) => {
    const fixed = new Uint8Array([...SIG, verCmd, fam, block.length >> 8, block.length & 0xff]);
    return [fixed, new Uint8Array(block)] as const;
  };
  const v4 = [192, 0, 2, 7, 10, 0, 0, 1, 0xc3, 0x50, 0xff, 0x98];
  assert.deepEqual(parseProxyHeader(...header(0x21, 0x11, v4)), {
    hostname: "192.0.2.7",
    port: 50000,
  });
  const v6 = [...Array(15).fill(0), 1, ...Array(16).fill(0), 0x00, 0x50, 0x00, 0x51];
  assert.deepEqual(parseProxyHeader(...header(0x21, 0x21, v6)), {
    hostname: "0:0:0:0:0:0:0:1",
    port: 80,
  });
  assert.deepEqual(parseProxyHeader(...header(0x20, 0x00, [])), {}, "LOCAL: the balancer itself");
  const refused: (readonly [Uint8Array, Uint8Array])[] = [
    header(0x11, 0x11, v4), // version 1 bits
    header(0x22, 0x11, v4), // unknown command
    header(0x21, 0x11, v4.slice(0, 8)), // IPv4 block too short
    header(0x21, 0x12, v4), // UDP
    header(0x21, 0x31, v4), // AF_UNIX
    [new Uint8Array(16), new Uint8Array()], // no signature
    [header(0x21, 0x11, v4)[0], new Uint8Array(3)], // length mismatch
  ];
  for (const [fixed, block] of refused) {
    assert.throws(() => parseProxyHeader(fixed, block), (e) => codeOf(e) === "PROTOCOL_ERROR");
  }
  const [tooLong] = header(0x21, 0x11, Array(513).fill(0));
  assert.throws(() => blockLength(tooLong), (e) => codeOf(e) === "PROTOCOL_ERROR");
});

Deno.test("UnansweredLines: a CLUSTER_UNAVAILABLE end lists the unanswered lines of the last 35 s, in seqno order, as likely only (PROTOCOL §6.5)", () => {
  let now = 1_000_000;
  const lines = new UnansweredLines(() => now);
  lines.sent(3, "lobby", "long ago");
  now += OPEN_WINDOW_MS + 1;
  lines.sent(4, "user:bob", "refused one");
  lines.sent(6, "lobby", "x".repeat(100));
  lines.sent(5, "user:carol", "queued one");
  lines.sent(7, "user:bob", "private, no answer");
  lines.answered(4);
  lines.answered(5);
  assert.deepEqual(lines.open().map((l) => l.seqno), [6, 7]);
  const said = clusterUncertainty(lines.open());
  assert.match(said[0], /could not confirm delivery$/);
  assert.match(said[1], /may or may not have reached their recipients \(likely, not proven/);
  assert.deepEqual(said.slice(2), [
    `  message 6 to the lobby: ${"x".repeat(40)}…`,
    "  message 7 to bob: private, no answer",
  ]);
  now += OPEN_WINDOW_MS + 1;
  assert.deepEqual(lines.open(), []);
  assert.match(clusterUncertainty([])[1], /none of your lines of its last 35 s/);
  const many = Array.from(
    { length: 25 },
    (_, i) => ({ seqno: i + 1, at: now, to: "lobby", text: "t" }),
  );
  const listed = clusterUncertainty(many);
  assert.equal(listed.length, 2 + 20 + 1);
  assert.equal(listed.at(-1), "  and 5 more (messages 21–25)");
});

Deno.test("listedNames() lists every name of presences longer than the engine's argument limit", () => {
  // Past ~125,000 arguments a call throws RangeError (less on a deeper stack): a node listing
  // that many users must not break remoteUsers()/departedUsers(), which every /who and lobby
  // membership check reads.
  const presence = (node: string, count: number): Presence => ({
    v: 1,
    node,
    at: 0,
    cursor: 0,
    users: Array.from({ length: count }, (_, i) => ({
      name: `${node}-${i}`,
      session: "00000000-0000-4000-8000-000000000000",
      since: 0,
    })),
  });
  const names = listedNames([presence("a", 200_000), presence("b", 3)]);
  assert.equal(names.length, 200_003);
  assert.equal(names[0], "a-0");
  assert.equal(names[199_999], "a-199999");
  assert.deepEqual(names.slice(200_000), ["b-0", "b-1", "b-2"]);
});
