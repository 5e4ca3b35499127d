/**
 * Issue 3 "must show": the server refuses every malformed, oversized, out-of-order or
 * downgraded opening of a connection with the code PROTOCOL §2–§5 names, through a real
 * `serve` process and real TCP, while an honest user's session (bob, a real `connect`)
 * carries on and closes cleanly with receipts. Each case asserts the code the server
 * LOGGED for that connection (matched by its peer address) and, where the server tells
 * the client, the code in its `error` frame.
 */
import { PROTOCOL_VERSION } from "../lib/wire/messages.ts";
import assert from "node:assert/strict";
import { fromHex, toBase64 } from "../lib/bytes.ts";
import { generateKeyShare } from "../lib/crypto/ecdh.ts";
import { keyAgreement } from "../lib/crypto/kex.ts";
import { makePki } from "../testkit/pki.ts";
import { startSharedServer } from "./helpers/shared_server.ts";
import {
  encoder,
  frame,
  HostileClient,
  json,
  type RefusalCase,
  runRefusalTable,
  serverCodeFor,
  X25519_LOW_ORDER,
} from "../testkit/hostile.ts";

const pki = await makePki(["bob", "mallory"]);
const shared = await startSharedServer({ pkiDir: pki.dir, users: { bob: "bob-password-1" } });
const { server } = shared;

const hostile = async () =>
  await HostileClient.connect(server.port, {
    identity: await pki.identity("mallory"),
    trust: pki.trust,
    username: "mallory",
    password: "whatever-password",
  });

const bystander = () => shared.bystander("bob", "bob-password-1");

const runTable = (t: Deno.TestContext, cases: RefusalCase[]) =>
  runRefusalTable(t, server, hostile, bystander, cases);

const raw = (bytes: Uint8Array) => async (h: HostileClient) => await h.conn.write(bytes);
const payload = (p: Uint8Array | string) => async (h: HostileClient) =>
  await h.conn.write(frame(typeof p === "string" ? encoder.encode(p) : p));
const b64 = (n: number, fill = 7) => toBase64(new Uint8Array(n).fill(fill));

/** Malformed variants of a good x25519mlkem768 client share (ek ‖ X25519), each named. */
function hybridShares(good: Uint8Array): [string, Uint8Array][] {
  const unreduced = good.slice();
  unreduced[1150] = 0xff;
  unreduced[1151] = 0xff; // the last coefficient of t̂: 4095 ≥ q (FIPS 203 §7.2)
  const lowOrder = good.slice();
  lowOrder.fill(0, 1184); // X25519 part u = 0
  return [
    ["1215 bytes", good.subarray(0, 1215)],
    ["the ML-KEM key alone (1184 bytes)", good.subarray(0, 1184)],
    ["an ML-KEM coefficient ≥ q", unreduced],
    ["a low-order X25519 part", lowOrder],
  ];
}

/** A well-formed hello (x25519) as a plain object, for edits. */
async function helloObject(): Promise<Record<string, unknown>> {
  const share = await generateKeyShare("x25519");
  return {
    type: "hello",
    version: PROTOCOL_VERSION,
    nonce: b64(32),
    groups: ["x25519", "p256"],
    key_share: { group: "x25519", pub: toBase64(share.publicKey) },
  };
}
const helloWith = (edit: (m: Record<string, unknown>) => void) => async (h: HostileClient) => {
  const m = await helloObject();
  edit(m);
  await h.conn.sendFrame(json(m));
};

Deno.test({
  name: "framing: oversized, zero, truncated and undecodable frames are refused",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) =>
    runTable(t, [
      {
        name: "length 65537 (one above MAX_FRAME_BYTES)",
        code: "FRAME_TOO_LARGE",
        detail: /65537/,
        run: raw(frame(new Uint8Array(100).fill(0x20), 65537)),
      },
      {
        name: "length 0xFFFFFFFF (4 GiB), nothing after it",
        code: "FRAME_TOO_LARGE",
        detail: /4294967295/,
        run: raw(Uint8Array.of(0xff, 0xff, 0xff, 0xff)),
      },
      {
        name: "length 0",
        code: "FRAME_TOO_LARGE",
        run: raw(Uint8Array.of(0, 0, 0, 0)),
      },
      {
        // 65536 is allowed by the framing; the padding member then fails the strict schema.
        name: "length exactly 65536: framing accepts it, the schema refuses the padding",
        code: "PROTOCOL_ERROR",
        detail: /hello/,
        run: async (h) => {
          const m = await helloObject();
          const base = JSON.stringify({ ...m, pad: "" }).length;
          await h.conn.sendFrame(json({ ...m, pad: "x".repeat(65536 - base) }));
        },
      },
      {
        name: "length prefix cut after 2 bytes, then EOF",
        code: "PROTOCOL_ERROR",
        detail: /length prefix/,
        // The peer already hung up: Deno closes the socket at the end of its readable,
        // so the server's error frame cannot reach it.
        clientSees: null,
        run: async (h) => {
          await h.conn.write(Uint8Array.of(0, 0));
          await h.conn.tcp.closeWrite();
        },
      },
      {
        name: "frame announcing 200 bytes, 20 sent, then EOF",
        code: "PROTOCOL_ERROR",
        detail: /inside a frame/,
        clientSees: null,
        run: async (h) => {
          await h.conn.write(frame(encoder.encode('{"type":"hello","ver'), 200));
          await h.conn.tcp.closeWrite();
        },
      },
      {
        name: "invalid UTF-8 (0xC3 0x28, lone 0xFF)",
        code: "PROTOCOL_ERROR",
        detail: /UTF-8/,
        run: payload(Uint8Array.of(0x7b, 0x22, 0xc3, 0x28, 0xff, 0x22, 0x7d)),
      },
      {
        name: "UTF-8 surrogate half encoded (ED A0 80) inside a JSON string",
        code: "PROTOCOL_ERROR",
        detail: /UTF-8/,
        run: payload(Uint8Array.of(...encoder.encode('{"type":"'), 0xed, 0xa0, 0x80, 0x22, 0x7d)),
      },
      {
        name: "not JSON",
        code: "PROTOCOL_ERROR",
        run: payload('{"type":"hello",'),
      },
      {
        name: "JSON but not an object (array)",
        code: "PROTOCOL_ERROR",
        run: payload("[1,2,3]"),
      },
      {
        name: "JSON null",
        code: "PROTOCOL_ERROR",
        run: payload("null"),
      },
      {
        name: "object without a type",
        code: "PROTOCOL_ERROR",
        run: payload('{"version":1}'),
      },
      {
        name: "deeply nested arrays (32,000 levels)",
        code: "PROTOCOL_ERROR",
        run: payload("[".repeat(32_000) + "]".repeat(32_000)),
      },
      {
        name: "hello whose version is nested 10,000 objects deep",
        code: "PROTOCOL_ERROR",
        run: payload(
          '{"type":"hello","version":' + '{"a":'.repeat(10_000) + "1" + "}".repeat(10_001),
        ),
      },
    ]),
});

Deno.test({
  name: "hello: missing, extra and mistyped fields are PROTOCOL_ERROR",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) =>
    runTable(t, [
      { name: "missing nonce", code: "PROTOCOL_ERROR", run: helloWith((m) => delete m.nonce) },
      {
        name: "missing key_share",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => delete m.key_share),
      },
      {
        name: "extra member",
        code: "PROTOCOL_ERROR",
        detail: /hello/,
        run: helloWith((m) => m.cert = "AAAA"),
      },
      {
        name: "extra member inside key_share",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => (m.key_share as Record<string, unknown>).x = 1),
      },
      {
        name: 'version "1" (string)',
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.version = "1"),
      },
      { name: "version 1.5", code: "PROTOCOL_ERROR", run: helloWith((m) => m.version = 1.5) },
      { name: "version -1", code: "PROTOCOL_ERROR", run: helloWith((m) => m.version = -1) },
      {
        name: "version 1e400 (Infinity)",
        code: "PROTOCOL_ERROR",
        run: async (h) => {
          const text = JSON.stringify(await helloObject()).replace(
            `"version":${PROTOCOL_VERSION}`,
            '"version":1e400',
          );
          await h.conn.sendFrame(encoder.encode(text));
        },
      },
      {
        name: "version 2^64",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.version = 18446744073709551616),
      },
      {
        name: "nonce of 31 bytes",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.nonce = b64(31)),
      },
      {
        name: "nonce not canonical base64 (unused bits set)",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.nonce = b64(32).slice(0, -2) + "B="),
      },
      {
        name: "nonce base64url alphabet",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.nonce = b64(32, 0xfb).replace(/\+/g, "-").replace(/\//g, "_")),
      },
      { name: "groups empty", code: "PROTOCOL_ERROR", run: helloWith((m) => m.groups = []) },
      {
        name: "groups with 9 entries",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.groups = Array(9).fill("x25519")),
      },
      {
        name: "groups a string",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => m.groups = "x25519"),
      },
      {
        name: "key_share.pub of 1217 bytes (schema bound: the hybrid's 1216 is the largest)",
        code: "PROTOCOL_ERROR",
        run: helloWith((m) => (m.key_share as Record<string, unknown>).pub = b64(1217)),
      },
      { name: 'type "HELLO"', code: "PROTOCOL_ERROR", run: helloWith((m) => m.type = "HELLO") },
    ]),
});

Deno.test({
  name: "out of order: anything but hello first, and a second hello, is PROTOCOL_ERROR",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) =>
    runTable(t, [
      {
        name: "a msg before any handshake",
        code: "PROTOCOL_ERROR",
        detail: /msg/,
        run: payload(
          JSON.stringify({ type: "msg", seqno: 1, ts: Date.now(), ct: b64(32), sig: b64(64) }),
        ),
      },
      {
        name: "login in plaintext as the first frame",
        code: "PROTOCOL_ERROR",
        detail: /login/,
        run: payload(
          JSON.stringify({ type: "login", username: "bob", password: "bob-password-1" }),
        ),
      },
      {
        name: "a sealed frame as the first frame",
        code: "PROTOCOL_ERROR",
        run: payload(JSON.stringify({ type: "sealed", ct: b64(48) })),
      },
      {
        name: "server_hello sent by the client",
        code: "PROTOCOL_ERROR",
        run: payload(JSON.stringify({
          type: "server_hello",
          version: PROTOCOL_VERSION,
          nonce: b64(32),
          time: Date.now(),
          key_share: { group: "x25519", pub: b64(32, 9) },
        })),
      },
      {
        // After server_hello only records are read (PROTOCOL §3.2): a plaintext frame fails to open.
        name: "a second hello (plaintext) instead of the sealed certificate",
        code: "DECRYPT_FAIL",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendHello();
        },
      },
      {
        name: "login in plaintext after the server's flight",
        code: "DECRYPT_FAIL",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendPlain({ type: "login", username: "mallory", password: "x" }, false);
        },
      },
      {
        name: "sealed login before the client certificate",
        code: "PROTOCOL_ERROR",
        detail: /login/,
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCredentials();
        },
      },
      {
        name: "sealed finished instead of certificate_verify",
        code: "PROTOCOL_ERROR",
        detail: /finished/,
        run: async (h) => {
          await h.upTo("certificate_verify");
          await h.sendFinished({ mac: new Uint8Array(32) });
        },
      },
      {
        name: "dh_client before login",
        code: "PROTOCOL_ERROR",
        detail: /dh_client/,
        run: async (h) => {
          await h.upTo("credentials");
          await h.sendDhClient();
        },
      },
      {
        // Nonces are implied by the record counter: a replayed record opens under the next one.
        name: "the sealed certificate sent twice (replayed record)",
        code: "DECRYPT_FAIL",
        run: async (h) => {
          await h.upTo("certificate");
          await h.sendCertificate();
          await h.conn.write(h.conn.sent.at(-1)!);
        },
      },
      {
        name: "sealed frame with random ct",
        code: "DECRYPT_FAIL",
        run: async (h) => {
          await h.upTo("certificate");
          await h.conn.sendFrame({ type: "sealed", ct: b64(64, 0x42) });
        },
      },
      {
        name: "a record shorter than the GCM tag",
        code: "DECRYPT_FAIL",
        run: async (h) => {
          await h.upTo("certificate");
          await h.conn.sendFrame(new Uint8Array(8));
        },
      },
    ]),
});

Deno.test({
  name: "downgrade and key shares: UNSUPPORTED and BAD_KEY_SHARE before the server answers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const p256 = await generateKeyShare("p256");
    const offCurve = p256.publicKey.slice();
    offCurve[64] ^= 1;
    const hybrid = (await keyAgreement("x25519mlkem768").generate()).share;
    const cases: RefusalCase[] = [
      { name: "hello version 0", code: "UNSUPPORTED", run: helloWith((m) => m.version = 0) },
      { name: "hello version 1", code: "UNSUPPORTED", run: helloWith((m) => m.version = 1) },
      // Version 2's peers send and expect relays in JSON: refused at the hello, not at the
      // first relay (PROTOCOL §11, session 24).
      { name: "hello version 2", code: "UNSUPPORTED", run: helloWith((m) => m.version = 2) },
      { name: "hello version 4", code: "UNSUPPORTED", run: helloWith((m) => m.version = 4) },
      {
        name: "a group the server does not allow (x448)",
        code: "UNSUPPORTED",
        run: helloWith((m) => {
          m.groups = ["x448"];
          m.key_share = { group: "x448", pub: b64(56) };
        }),
      },
      {
        name: "key_share group not in the offered list",
        code: "UNSUPPORTED",
        run: helloWith((m) => m.groups = ["p256"]),
      },
      ...Object.entries(X25519_LOW_ORDER).map(([name, hex]): RefusalCase => ({
        name: `X25519 low-order share ${name}`,
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => m.key_share = { group: "x25519", pub: toBase64(fromHex(hex)) }),
      })),
      {
        name: "X25519 share of 31 bytes",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => m.key_share = { group: "x25519", pub: b64(31) }),
      },
      {
        name: "P-256 point off the curve",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["p256"];
          m.key_share = { group: "p256", pub: toBase64(offCurve) };
        }),
      },
      {
        name: "P-256 compressed point",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["p256"];
          const compressed = Uint8Array.of(
            2 + (p256.publicKey[64] & 1),
            ...p256.publicKey.slice(1, 33),
          );
          m.key_share = { group: "p256", pub: toBase64(compressed) };
        }),
      },
      {
        name: "P-256 identity (0x00)",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["p256"];
          m.key_share = { group: "p256", pub: "AA==" };
        }),
      },
      {
        name: "P-256 0x04 with X = Y = 0",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["p256"];
          m.key_share = { group: "p256", pub: toBase64(Uint8Array.of(4, ...new Uint8Array(64))) };
        }),
      },
      {
        name: "P-256 coordinates above p",
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["p256"];
          m.key_share = {
            group: "p256",
            pub: toBase64(Uint8Array.of(4, ...new Uint8Array(64).fill(0xff))),
          };
        }),
      },
      ...hybridShares(hybrid).map(([name, share]): RefusalCase => ({
        name: `x25519mlkem768 share: ${name}`,
        code: "BAD_KEY_SHARE",
        run: helloWith((m) => {
          m.groups = ["x25519mlkem768"];
          m.key_share = { group: "x25519mlkem768", pub: toBase64(share) };
        }),
      })),
    ];
    await runTable(t, cases);
  },
});

Deno.test({
  name: "a client's own error frame ends its handshake with the client's code",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const bob = await bystander();
    try {
      for (const [sent, logged] of [["BAD_CERT", "BAD_CERT"], ["NOT_A_CODE", "PROTOCOL_ERROR"]]) {
        const from = server.mark();
        const h = await hostile();
        try {
          await h.upTo("certificate");
          await h.sendSealed({ type: "error", code: sent });
          const e = await serverCodeFor(server, h.conn, from);
          assert.equal(e.event, logged);
          assert.match(String(e.detail), /peer ended the session/);
          // The server does not answer a peer's error with one of its own.
          const end = await h.expectEnd();
          assert.ok(end.closed);
          assert.equal(end.code, undefined);
        } finally {
          h.close();
        }
      }
    } finally {
      await bob.finish();
    }
  },
});

shared.testShutdown((s) => {
  assert.ok(s.events((e) => e.event === "SHUTDOWN").length === 1);
  assert.equal(s.events((e) => e.event === "INTERNAL").length, 0, "no INTERNAL errors");
});
