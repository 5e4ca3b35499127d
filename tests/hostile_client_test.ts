/**
 * Issue 8, the hostile-client library at work: a client that runs the real handshake up
 * to a chosen step and then misbehaves (testkit/hostile.ts), against a real `serve`
 * process. Every case asserts the code the server LOGGED for that connection, and bob,
 * an honest `connect` logged in throughout, still gets answers and closes with receipts.
 */
import assert from "node:assert/strict";
import { fromHex, toBase64, utf8 } from "../lib/bytes.ts";
import { sign } from "../lib/crypto/signature.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import { signatureInput } from "../lib/handshake/key_schedule.ts";
import { ChatSession, type ReceivedMessage } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { certDer, makeBadCertPki } from "./helpers/cert_fixtures.ts";
import {
  expectRefused,
  HostileClient,
  json,
  peerOf,
  type RefusalCase,
  runRefusalTable,
  serverCodeFor,
  X25519_LOW_ORDER,
} from "../testkit/hostile.ts";
import { pollUntil, registerUser, ServerProcess } from "../testkit/server_process.ts";
import { cleanUpAtExit, startSharedServer } from "./helpers/shared_server.ts";

const fixtures = await makeBadCertPki(["alice", "bob", "mallory"]);
const { pki } = fixtures;
const PASSWORDS = { bob: "bob-password-1", mallory: "mallory-password-1" };
const shared = await startSharedServer({
  pkiDir: pki.dir,
  alsoRemove: [fixtures.other.dir],
  users: PASSWORDS,
});
const { server } = shared;

const mallory = async (port = server.port) =>
  await HostileClient.connect(port, {
    identity: await pki.identity("mallory"),
    trust: pki.trust,
    username: "mallory",
    password: PASSWORDS.mallory,
  });

const bystander = (s = server) => shared.bystander("bob", PASSWORDS.bob, s);

const bytes = (n: number, fill = 0x5a) => new Uint8Array(n).fill(fill);

const runTable = (t: Deno.TestContext, cases: RefusalCase[]) =>
  runRefusalTable(t, server, () => mallory(), bystander, cases);

Deno.test({
  name: "hostile handshake: certificates, signatures, Finished, credentials, phase 2",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const bobKey = (await pki.identity("bob")).signingKey;
    const cert = (name: string) => async (h: HostileClient) => {
      await h.upTo("certificate");
      await h.sendCertificate({ cert: await certDer(pki, name) });
    };
    await runTable(t, [
      {
        name: "certificate of 500 random bytes",
        code: "BAD_CERT",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate({ cert: crypto.getRandomValues(new Uint8Array(500)) });
        },
      },
      {
        name: "garbage certificate of exactly 16 KiB (schema allows, parser refuses)",
        code: "BAD_CERT",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate({ cert: bytes(16 * 1024, 0x30) });
        },
      },
      {
        // PROTOCOL §3.2: cert ≤ 16 KiB is part of the schema, so an oversized one is malformed.
        name: "certificate field of 16 KiB + 1 byte",
        code: "PROTOCOL_ERROR",
        detail: /cert/,
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate({ cert: bytes(16 * 1024 + 1, 0x30) });
        },
      },
      {
        name: "enormous certificate (30,000 bytes, still inside one frame)",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate({ cert: bytes(30_000, 0x30) });
        },
      },
      {
        name: "the CA certificate as a client certificate",
        code: "BAD_CERT",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate({ cert: pki.trust.caDer });
        },
      },
      {
        name: "client certificate with an Ed448 key (unknown algorithm)",
        code: "BAD_CERT",
        detail: /unsupported/,
        run: cert("ed448-alice"),
      },
      {
        // Chains to our CA and is otherwise a valid client certificate, but P-384 is not
        // one of the protocol's signature algorithms (PROTOCOL §4.6): the certificate is
        // unusable, so it must be refused as BAD_CERT at step 4 (not UNSUPPORTED).
        name: "client certificate with an ECDSA P-384 key (not a protocol algorithm)",
        code: "BAD_CERT",
        run: cert("p384-alice"),
      },
      {
        name: "client certificate with a 1024-bit RSA key",
        code: "BAD_CERT",
        detail: /RSA/,
        run: cert("rsa1024-alice"),
      },
      {
        name: "certificate_verify of 10 bytes (wrong length)",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify");
          await h.sendCertificateVerify({ sig: bytes(10) });
        },
      },
      {
        name: "certificate_verify of 64 zero bytes",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify");
          await h.sendCertificateVerify({ sig: bytes(64, 0) });
        },
      },
      {
        name: "certificate_verify of 1025 bytes (schema bound)",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("certificate_verify");
          await h.sendCertificateVerify({ sig: bytes(1025) });
        },
      },
      {
        name: "certificate_verify made with the server's role label (reflection)",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify");
          const input = signatureInput("server", 1, await h.transcript.hash());
          await h.sendCertificateVerify({ sig: await sign(h.opts.identity.signingKey, input) });
        },
      },
      {
        name: "certificate_verify signed by another user's key",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify");
          const input = signatureInput("client", 1, await h.transcript.hash());
          await h.sendCertificateVerify({ sig: await sign(bobKey, input) });
        },
      },
      {
        name: "Finished with a wrong MAC",
        code: "HANDSHAKE_FAIL",
        run: async (h) => {
          await h.upTo("finished");
          await h.sendFinished({ mac: bytes(32, 1) });
        },
      },
      {
        name: "Finished MAC of 16 bytes",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("finished");
          await h.sendFinished({ mac: bytes(16, 1) });
        },
      },
      {
        name: "login as bob with mallory's certificate (user name ≠ CN)",
        code: "AUTH_FAIL",
        run: async (h) => {
          await h.upTo("credentials");
          await h.sendCredentials({
            payload: json({ type: "login", username: "bob", password: PASSWORDS.bob }),
          });
        },
      },
      {
        name: "login with an extra member",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("credentials");
          await h.sendCredentials({ mutate: (m) => ({ ...m, admin: true }) });
        },
      },
      {
        name: "login with a numeric password",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("credentials");
          await h.sendCredentials({ mutate: (m) => ({ ...m, password: 12345678 }) });
        },
      },
      {
        name: "login with a 1025-character password",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          await h.upTo("credentials");
          await h.sendCredentials({ mutate: (m) => ({ ...m, password: "p".repeat(1025) }) });
        },
      },
      {
        name: "dh_client with a low-order X25519 share (u=1)",
        code: "BAD_KEY_SHARE",
        run: async (h) => {
          await h.upTo("dh_client");
          await h.sendDhClient({ pub: fromHex(X25519_LOW_ORDER["u=1"]) });
          await h.sendCertificateVerify2();
        },
      },
      {
        name: "dh_client in another group than phase 1",
        code: "UNSUPPORTED",
        run: async (h) => {
          await h.upTo("dh_client");
          await h.sendDhClient({ group: "p256" });
        },
      },
      {
        name: "phase 2 certificate_verify of the wrong length",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify2");
          await h.sendCertificateVerify2({ sig: bytes(63) });
        },
      },
      {
        name: "phase 2 certificate_verify with the phase 1 label",
        code: "SIG_FAIL",
        run: async (h) => {
          await h.upTo("certificate_verify2");
          const input = signatureInput("client", 1, await h.transcript.hash());
          await h.sendCertificateVerify2({ sig: await sign(h.opts.identity.signingKey, input) });
        },
      },
    ]);
  },
});

/** Mallory's session goes on after a rejected message: the next good one is answered. */
async function stillAnswers(h: HostileClient): Promise<void> {
  await h.sendMsg({ kind: "who" });
  const body = await h.readMsgUntil((b) => b.kind === "notice" && b.text.startsWith("online:"));
  assert.ok(body.kind === "notice" && body.text.includes("mallory"));
}

interface MsgCase {
  name: string;
  code: string;
  /** true: the message is rejected and the session goes on (§6.3); false: the session ends. */
  continues: boolean;
  run(h: HostileClient): Promise<void>;
}

Deno.test({
  name: "hostile chat messages: replays, stale, forged and malformed msg frames",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const HOUR_MS = 60 * 60 * 1000;
    const flip = (b: Uint8Array) => (b[0] ^= 1, b);
    const cases: MsgCase[] = [
      {
        name: "the same msg frame twice",
        code: "REPLAY",
        continues: true,
        run: async (h) => {
          const frame = await h.msgFrame({ kind: "text", text: "once" });
          await h.conn.sendFrame(frame);
          await h.conn.sendFrame(frame);
        },
      },
      {
        name: "a new message reusing an accepted seqno",
        code: "REPLAY",
        continues: true,
        run: async (h) => {
          await h.sendMsg({ kind: "text", text: "first" });
          await h.sendMsg({ kind: "text", text: "again" }, { seqno: 1 });
        },
      },
      {
        name: "ts one hour old",
        code: "STALE",
        continues: true,
        run: (h) =>
          h.sendMsg({ kind: "text", text: "old" }, { seqno: 1, ts: Date.now() - HOUR_MS }),
      },
      {
        name: "ts one hour ahead",
        code: "STALE",
        continues: true,
        run: (h) =>
          h.sendMsg({ kind: "text", text: "new" }, { seqno: 1, ts: Date.now() + HOUR_MS }),
      },
      {
        name: "sig of the wrong length",
        code: "SIG_FAIL",
        continues: true,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { seqno: 1, sig: (s) => s.slice(1) }),
      },
      {
        name: "one bit flipped in sig",
        code: "SIG_FAIL",
        continues: true,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { seqno: 1, sig: flip }),
      },
      {
        name: "one bit flipped in ct (the signature covers ct)",
        code: "SIG_FAIL",
        continues: true,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { seqno: 1, ct: flip }),
      },
      {
        name: "ct under the wrong key, correctly signed",
        code: "DECRYPT_FAIL",
        continues: true,
        run: async (h) => {
          // Sealed for seqno 7 (another message key), sent and signed as seqno 1.
          const other = JSON.parse(
            new TextDecoder().decode(await h.msgFrame({ kind: "text", text: "x" }, { seqno: 7 })),
          );
          const ts = Date.now();
          const ct = Uint8Array.from(atob(other.ct), (c) => c.charCodeAt(0));
          const { msgDigest } = await import("../lib/session/chat_channel.ts");
          const sig = await sign(h.opts.identity.signingKey, await msgDigest(1, ts, ct));
          await h.conn.sendFrame({ type: "msg", seqno: 1, ts, ct: other.ct, sig: toBase64(sig) });
        },
      },
      {
        name: "seqno 2 first (a gap: frames removed in transit)",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { seqno: 2 }),
      },
      {
        name: "seqno 2^53 − 1 (a huge gap)",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { seqno: Number.MAX_SAFE_INTEGER }),
      },
      ...([
        ["seqno 0", 0],
        ["seqno -1", -1],
        ["seqno 1.5", 1.5],
        ['seqno "1" (string)', "1"],
        ["seqno 2^53 (above the JSON integer limit)", 2 ** 53],
        ["seqno null", null],
      ] as const).map(([name, seqno]): MsgCase => ({
        name,
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "text", text: "x" }, { frame: (f) => ({ ...f, seqno }) }),
      })),
      {
        name: "seqno 1e400 (Infinity once parsed)",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: async (h) => {
          const text = new TextDecoder().decode(await h.msgFrame({ kind: "who" }));
          await h.conn.sendFrame(text.replace('"seqno":1', '"seqno":1e400'));
        },
      },
      {
        name: "negative ts",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "who" }, { frame: (f) => ({ ...f, ts: -1 }) }),
      },
      {
        name: "msg without sig",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "who" }, { frame: ({ sig: _, ...f }) => f }),
      },
      {
        name: "msg with an extra member",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "who" }, { frame: (f) => ({ ...f, from: "bob" }) }),
      },
      {
        name: "a body of an unknown kind, correctly sealed and signed",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg(utf8('{"kind":"shout","text":"x"}')),
      },
      {
        name: "a body that is not UTF-8, correctly sealed and signed",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)),
      },
      {
        name: "a text body of 4001 characters",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendMsg({ kind: "text", text: "a".repeat(4001) }),
      },
      {
        name: "a second hello after the handshake",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: (h) => h.sendHello(),
      },
      {
        name: "a sealed control frame that does not open",
        code: "DECRYPT_FAIL",
        continues: false,
        run: (h) => h.conn.sendFrame({ type: "sealed", ct: toBase64(bytes(40)) }),
      },
      {
        name: "a msg after our own close",
        code: "PROTOCOL_ERROR",
        continues: false,
        run: async (h) => {
          await h.sendSealed({ type: "close" });
          await h.sendMsg({ kind: "text", text: "too late" });
        },
      },
    ];
    const bob = await bystander();
    try {
      for (const c of cases) {
        await t.step(
          `${c.name} → ${c.code}${c.continues ? " (session goes on)" : ""}`,
          async () => {
            const h = await mallory();
            try {
              await h.handshake();
              const login = await server.waitFor(
                (e) => e.event === "LOGIN" && e.peer === peerOf(h.conn),
              );
              const from = server.mark();
              await c.run(h);
              const logged = await serverCodeFor(server, h.conn, from);
              assert.equal(logged.event, c.code, JSON.stringify(logged));
              if (c.continues) {
                assert.equal(
                  typeof logged.seqno,
                  "number",
                  "a rejected message is logged with its seqno",
                );
                await stillAnswers(h);
                h.close();
                await server.waitFor(
                  (e) => e.event === "CLOSE" && e.session === login.session,
                  10_000,
                  from,
                );
              } else {
                const end = await h.expectEnd();
                assert.ok(end.closed, "the server did not end the session");
                const close = await server.waitFor(
                  (e) => e.event === "CLOSE" && e.session === login.session,
                  10_000,
                  from,
                );
                assert.equal(close.outcome, "error");
                if (c.name !== "a msg after our own close") assert.equal(end.code, c.code);
              }
            } finally {
              h.close();
            }
          },
        );
      }

      await t.step("16 rejected messages end the session with the last code", async () => {
        const h = await mallory();
        try {
          await h.handshake();
          const from = server.mark();
          const frame = await h.msgFrame({ kind: "text", text: "once" });
          await h.conn.sendFrame(frame);
          for (let i = 0; i < 16; i++) await h.conn.sendFrame(frame);
          const end = await h.expectEnd();
          assert.ok(end.closed);
          assert.equal(end.code, "REPLAY");
          const peer = peerOf(h.conn);
          const replays = server.events((e) => e.event === "REPLAY" && e.peer === peer, from);
          // 15 logged one by one, then the 16th ends the session (logged once more at the end).
          assert.ok(replays.length >= 15, `${replays.length} REPLAY lines`);
          await server.waitFor(
            (e) => e.event === "CLOSE" && e.peer === peer && e.outcome === "error",
            10_000,
            from,
          );
        } finally {
          h.close();
        }
      });
    } finally {
      await bob.finish();
    }
  },
});

Deno.test({
  name: "frames split into single bytes: a full honest handshake and session succeed",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const bob = await bystander();
    const transcripts = await Deno.makeTempDir({ prefix: "securechat-bytewise-" });
    try {
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      tcp.setNoDelay(true);
      let writes = 0;
      // Every write carries one byte: the server sees every frame in ≥ 5 pieces.
      const oneByteAtATime = {
        readable: tcp.readable,
        write: async (b: Uint8Array) => (writes++, await tcp.write(b.subarray(0, 1))),
        close: () => tcp.close(),
      };
      const est = await clientHandshake(new FrameConnection(oneByteAtATime), {
        identity: await pki.identity("mallory"),
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: "mallory", password: PASSWORDS.mallory },
      });
      const login = await server.waitFor((e) => e.event === "LOGIN" && e.session === est.sessionId);
      assert.equal(login.user, "mallory");
      const session = await ChatSession.start(est, { transcriptDir: transcripts });
      const got: ReceivedMessage[] = [];
      const running = session.run({ onMessage: (m) => void got.push(m) });
      await session.send({ kind: "who" });
      await pollUntil(
        () => got.find((m) => m.body.kind === "notice" && m.body.text.startsWith("online:")),
        10_000,
        () => JSON.stringify(got.map((m) => m.body)),
      );
      await session.close();
      const end = await running;
      assert.equal(end.outcome, "closed", end.message);
      assert.ok(end.receiptPath && end.peerReceiptPath);
      assert.ok(writes > 1000, `only ${writes} writes`);
      const close = await server.waitFor((e) => e.event === "CLOSE" && e.session === est.sessionId);
      assert.equal(close.outcome, "closed");
    } finally {
      await bob.finish();
      await Deno.remove(transcripts, { recursive: true });
    }
  },
});

/** Long enough for bob's real login (a PBKDF2) on a busy machine, short for the test. */
const HANDSHAKE_TIMEOUT_MS = 3000;

Deno.test({
  name:
    `a client that never finishes its handshake is dropped with TIMEOUT (--handshake-timeout ${HANDSHAKE_TIMEOUT_MS})`,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const ts = await ServerProcess.start({
      pkiDir: pki.dir,
      args: ["--handshake-timeout", String(HANDSHAKE_TIMEOUT_MS), "--handshake-rate", "1000"],
    });
    cleanUpAtExit(ts);
    try {
      await registerUser(ts, pki.dir, "bob", PASSWORDS.bob);
      const bob = await bystander(ts);
      try {
        const stalls: [string, (h: HostileClient) => Promise<void>][] = [
          ["connects and sends nothing", async () => {}],
          ["sends half a length prefix", (h) => h.conn.write(Uint8Array.of(0, 0))],
          ["sends hello, reads the server's flight, then stalls", (h) => h.upTo("certificate")],
          ["stops after its certificate_verify", (h) => h.upTo("finished")],
        ];
        for (const [name, stall] of stalls) {
          await t.step(`${name} → TIMEOUT`, async () => {
            const from = ts.mark();
            const h = await mallory(ts.port);
            try {
              const started = Date.now();
              await stall(h);
              await expectRefused(ts, h, "TIMEOUT", from);
              // The logged TIMEOUT says why; the time only that it was not early (load
              // can only make it later).
              const took = Date.now() - started;
              assert.ok(took >= HANDSHAKE_TIMEOUT_MS - 100, `dropped after ${took} ms`);
            } finally {
              h.close();
            }
          });
        }
      } finally {
        await bob.finish();
      }
      const status = await ts.stop();
      assert.equal(status.code, 0);
    } finally {
      await ts.dispose();
    }
  },
});

shared.testShutdown((s) => {
  assert.equal(s.events((e) => e.event === "INTERNAL").length, 0, "no INTERNAL errors");
});
