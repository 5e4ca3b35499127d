/**
 * PROTOCOL §9: the protocol test vectors of tests/vectors/protocol/ (format in its
 * README.md; regenerate with tests/helpers/generate_protocol_vectors.ts).
 *
 * 1. Every frame is opened, and every key, hash, signature and MAC recomputed, from the
 *    inputs with the primitives alone (lib/crypto/*) and an ExpandLabel / H() / record
 *    layer written here from the text of PROTOCOL §2–§4: lib/handshake/ is deliberately
 *    not imported for this part, so a bug there cannot hide in both halves.
 * 2. Every record's ek, ct, commitment, statement and signature is recomputed (§6.1).
 * 3. The real client and server state machines replay against the recorded peer frames and
 *    must write the recorded handshake frames byte for byte.
 * 4. negative.json: each tampered case, built from a fresh valid one against the real state
 *    machines, ends the session with exactly its code.
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { concat, fromBase64, fromHex, toBase64, toHex, u32be, u64be, utf8 } from "../lib/bytes.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { counterNonce, openChaCha20Poly1305, sealChaCha20Poly1305 } from "../lib/crypto/aead.ts";
import { hkdfExpandSync, hmacSha256Sync } from "../lib/crypto/hkdf.ts";
import { type KexGroup, keyAgreement } from "../lib/crypto/kex.ts";
import {
  importSigningKeyPkcs8,
  importVerifyingKeySpki,
  sign,
  verify,
} from "../lib/crypto/signature.ts";
import { SecureChatError } from "../lib/errors.ts";
import { clientHandshake, type Credentials } from "../lib/handshake/client.ts";
import type { EstablishedSession, HandshakeRandomness, Identity } from "../lib/handshake/common.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import { RecordLayer } from "../lib/handshake/record.ts";
import {
  decodeRecord,
  encodeRecord,
  groupPath,
  groupProof,
  groupRoot,
  leafHash,
  LOBBY,
  MAX_BATCH,
  merkleTree,
  type MessageRecord,
  prepareUserMsg,
  RecordJsonShape,
  RecordSignatures,
  RelayMessageShape,
  rootFromPath,
  sealContent,
  sealPlaintext,
  signBatch,
  statement,
} from "../lib/message/record.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { pemDecode } from "../lib/pki/pem.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { ChatSession } from "../lib/session/session.ts";
import { type ByteStreamConn, FrameConnection } from "../lib/wire/connection.ts";
import { encodeRelay } from "./helpers/relay_wire.ts";

type Dir = "c2s" | "s2c";
interface Frame {
  index: number;
  dir: Dir;
  key: "none" | "hs" | "app0" | "app1";
  counter?: number;
  /** One content; a frame of several (PROTOCOL §3.2) has contents_hex instead. */
  content_hex?: string;
  contents_hex?: string[];
  payload_hex: string;
}
interface Vector {
  inputs: {
    group: KexGroup;
    client_groups: KexGroup[];
    server_groups: KexGroup[];
    credentials: Credentials;
    time: number;
    client: { nonce: string; eph1_private: string; eph2_private: string };
    server: { nonce: string; eph1_private: string; eph2_private: string };
    pki: {
      server_name: string;
      ca_cert_pem: string;
      server_cert_pem: string;
      server_key_pem: string;
      client_cert_pem: string;
      client_key_pem: string;
    };
  };
  session_id: string;
  key_schedule: Record<string, string> & {
    handshake_hashes: { frame: number; type: string; covers_hash: string }[];
  };
  records: {
    name: string;
    k: string;
    ek: string;
    c: string;
    body: string;
    statement_hex: string | null;
    record: {
      sid: string;
      dir: Dir;
      to: string;
      seqno: number;
      ts: number;
      ct: string;
      c: string;
      sig?: string;
      batch?: BatchJson;
    };
  }[];
  frames: Frame[];
}
type BatchJson = { i: number; n: number; path: string[] };

const DIR = new URL("./vectors/protocol/", import.meta.url);
const load = async (name: string) => JSON.parse(await Deno.readTextFile(new URL(name, DIR)));
const FILES = [
  "handshake_ed25519_x25519.json",
  "handshake_rsa2048_p256.json",
  "handshake_ed25519_x25519mlkem768.json",
];

// ---- PROTOCOL §2–§4, written from the text ----

const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};
const expandLabel = (secret: Uint8Array, label: string, context: Uint8Array, length: number) =>
  hkdfExpandSync(secret, concat(utf8(`securechat/v2 ${label}`), Uint8Array.of(0), context), length);
const EMPTY = new Uint8Array(0);
const H = (messages: Uint8Array[]) => sha256(...messages.flatMap((m) => [u32be(m.length), m]));
const RECORD_AAD = utf8("securechat/v2 record");
const trafficKeys = (secret: Uint8Array) => ({
  key: expandLabel(secret, "key", EMPTY, 32),
  iv: expandLabel(secret, "iv", EMPTY, 12),
});
function openRecord(
  keys: { key: Uint8Array; iv: Uint8Array },
  counter: number,
  payload: Uint8Array,
) {
  const inner = openChaCha20Poly1305(keys.key, counterNonce(keys.iv, counter), payload, RECORD_AAD);
  assert.equal(inner.length % 256, 0, "inner padded to 256");
  const n = new DataView(inner.buffer, inner.byteOffset).getUint32(0);
  assert.ok(inner.subarray(4 + n).every((b) => b === 0), "zero padding");
  return inner.subarray(4, 4 + n);
}
function sealRecord(
  keys: { key: Uint8Array; iv: Uint8Array },
  counter: number,
  content: Uint8Array,
) {
  const inner = new Uint8Array(Math.ceil((content.length + 4) / 256) * 256);
  inner.set(u32be(content.length));
  inner.set(content, 4);
  return sealChaCha20Poly1305(keys.key, counterNonce(keys.iv, counter), inner, RECORD_AAD);
}
/** `inner` read as PROTOCOL §3.2 says: its contents, each behind its length, then zeros. */
function openContents(
  keys: { key: Uint8Array; iv: Uint8Array },
  counter: number,
  payload: Uint8Array,
): Uint8Array[] {
  const inner = openChaCha20Poly1305(keys.key, counterNonce(keys.iv, counter), payload, RECORD_AAD);
  assert.equal(inner.length % 256, 0, "inner padded to 256");
  const view = new DataView(inner.buffer, inner.byteOffset);
  const contents: Uint8Array[] = [];
  let at = 0;
  while (inner.length - at >= 4) {
    const n = view.getUint32(at);
    if (n === 0) break;
    assert.ok(n <= inner.length - at - 4, "a content within the record");
    contents.push(inner.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  assert.ok(inner.subarray(at).every((b) => b === 0), "zero padding");
  assert.ok(contents.length >= 1, "at least one content");
  return contents;
}
function sealContents(
  keys: { key: Uint8Array; iv: Uint8Array },
  counter: number,
  contents: Uint8Array[],
) {
  const framed = concat(...contents.flatMap((c) => [u32be(c.length), c]));
  const inner = new Uint8Array(Math.ceil(framed.length / 256) * 256);
  inner.set(framed);
  return sealChaCha20Poly1305(keys.key, counterNonce(keys.iv, counter), inner, RECORD_AAD);
}
const json = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

// ---- PROTOCOL §6.1's signed batches, written from the text (RFC 9162 §2.1) ----

const leafOf = (statement: Uint8Array) => sha256(Uint8Array.of(0), statement);
const nodeOf = (l: Uint8Array, r: Uint8Array) => sha256(Uint8Array.of(1), l, r);
/** MTH over leaf hashes. */
function mth(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeOf(mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}
/** RFC 9162 §2.1.3.2, as PROTOCOL §6.1 step 1 writes it; null on a path that does not fit. */
function rootOf(leaf: Uint8Array, i: number, n: number, path: Uint8Array[]): Uint8Array | null {
  let fn = i;
  let sn = n - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeOf(p, r);
      while (fn !== 0 && fn % 2 === 0) {
        fn >>= 1;
        sn >>= 1;
      }
    } else r = nodeOf(r, p);
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 ? r : null;
}
const batchStatementOf = (sid: string, first: number, n: number, root: Uint8Array) =>
  concat(
    utf8("securechat/v2 message batch\0"),
    u32be(2),
    fromHex(sid),
    Uint8Array.of(1),
    u64be(first),
    u32be(n),
    root,
  );

for (const file of FILES) {
  Deno.test(`vectors ${file}: every value recomputed from the primitives (PROTOCOL §4, §6.1)`, async () => {
    const v: Vector = await load(file);
    const { group, pki } = v.inputs;
    const frames = v.frames.map((f) => ({ ...f, payload: fromHex(f.payload_hex) }));
    // The client's half of each exchange from its fixed material and the server's share.
    const complete = async (g: KexGroup, clientSecret: string, serverShare: Uint8Array) =>
      await (await keyAgreement(g).generate(fromHex(clientSecret))).complete(serverShare);
    // PROTOCOL §4.2: phase 2 runs the hybrid's X25519 half, any other group itself.
    const group2 = group === "x25519mlkem768" ? "x25519" : group;
    const serverHello = json(frames[1].payload);
    const ss1 = await complete(
      group,
      v.inputs.client.eph1_private,
      fromBase64(serverHello.key_share.pub),
    );
    const hashed: Uint8Array[] = [frames[0].payload, frames[1].payload];
    const H1 = H(hashed);
    const hs = hmacSha256Sync(utf8("securechat/v2"), ss1);
    const hsKeys = {
      c2s: { key: expandLabel(hs, "hs c2s key", H1, 32), iv: expandLabel(hs, "hs c2s iv", H1, 12) },
      s2c: { key: expandLabel(hs, "hs s2c key", H1, 32), iv: expandLabel(hs, "hs s2c iv", H1, 12) },
    };
    const fin1 = {
      client: expandLabel(hs, "client finished", H1, 32),
      server: expandLabel(hs, "server finished", H1, 32),
    };
    const ks = v.key_schedule;
    const same = (name: string, value: Uint8Array) => assert.equal(toHex(value), ks[name], name);
    same("ss1", ss1);
    same("H1", H1);
    same("hs", hs);
    same("hs_key_c2s", hsKeys.c2s.key);
    same("hs_iv_c2s", hsKeys.c2s.iv);
    same("hs_key_s2c", hsKeys.s2c.key);
    same("hs_iv_s2c", hsKeys.s2c.iv);
    same("fin1_client", fin1.client);
    same("fin1_server", fin1.server);
    const certKey = async (pem: string) =>
      await importVerifyingKeySpki(
        parseCertificate(pemDecode(pem, "CERTIFICATE", "BAD_CERT")).spki,
      );
    const keys = {
      server: await certKey(pki.server_cert_pem),
      client: await certKey(pki.client_cert_pem),
    };
    const counters = { c2s: 0, s2c: 0 };
    let master: Uint8Array | undefined;
    let app: Record<Dir, Uint8Array> | undefined;
    const seen: string[] = [];
    for (const f of frames.slice(2).filter((f) => f.key === "hs")) {
      assert.equal(f.counter, counters[f.dir], `frame ${f.index} counter`);
      const content = openRecord(hsKeys[f.dir], counters[f.dir]++, f.payload);
      assert.equal(toHex(content), f.content_hex, `frame ${f.index} content`);
      const recorded = ks.handshake_hashes.find((h) => h.frame === f.index);
      if (recorded) assert.equal(toHex(H(hashed)), recorded.covers_hash, `hash before ${f.index}`);
      assert.deepEqual(
        sealRecord(hsKeys[f.dir], counters[f.dir] - 1, content),
        f.payload,
        "re-seals byte for byte",
      );
      const m = json(content);
      seen.push(`${f.dir} ${m.type}`);
      const role = f.dir === "c2s" ? "client" : "server";
      if (m.type === "certificate_verify") {
        const signed = concat(utf8(`securechat/v2 ${role} signature`), Uint8Array.of(0), H(hashed));
        assert.ok(await verify(keys[role], signed, fromBase64(m.sig)), `${role} signature`);
      }
      if (m.type === "finished") {
        const phase2 = master !== undefined;
        const key = phase2 ? expandLabel(master!, `${role} finished 2`, EMPTY, 32) : fin1[role];
        assert.equal(
          toHex(fromBase64(m.mac)),
          toHex(hmacSha256Sync(key, H(hashed))),
          `${role} Finished`,
        );
      }
      if (m.type === "login" || m.type === "register") continue; // never hashed
      hashed.push(content);
      if (m.type === "dh_client" || m.type === "dh_server") {
        assert.equal(m.key_share.group, group2, `${m.type} group`);
      }
      if (m.type === "dh_server") {
        const ss2 = await complete(
          group2,
          v.inputs.client.eph2_private,
          fromBase64(m.key_share.pub),
        );
        same("ss2", ss2);
        same("derived", expandLabel(hs, "derived", EMPTY, 32));
        master = hmacSha256Sync(expandLabel(hs, "derived", EMPTY, 32), ss2);
        same("master", master);
        same("fin2_client", expandLabel(master, "client finished 2", EMPTY, 32));
        same("fin2_server", expandLabel(master, "server finished 2", EMPTY, 32));
      }
      if (m.type === "finished" && role === "server" && master) {
        const hFinal = H(hashed);
        assert.equal(toHex(expandLabel(master, "session id", hFinal, 16)), v.session_id);
        app = {
          c2s: expandLabel(master, "app c2s", hFinal, 32),
          s2c: expandLabel(master, "app s2c", hFinal, 32),
        };
        same("Hfinal", hFinal);
        same("session_id", expandLabel(master, "session id", hFinal, 16));
        same("app_c2s_0", app.c2s);
        same("app_s2c_0", app.s2c);
        same("app_c2s_1", expandLabel(app.c2s, "traffic upd", EMPTY, 32));
      }
    }
    assert.deepEqual(seen, [
      "s2c certificate",
      "s2c certificate_verify",
      "s2c finished",
      "c2s certificate",
      "c2s certificate_verify",
      "c2s finished",
      `c2s ${v.inputs.credentials.mode}`,
      "s2c auth_ok",
      "c2s dh_client",
      "s2c dh_server",
      "s2c finished",
      "c2s finished",
    ]);
    // The session: application keys, a c2s key update (PROTOCOL §4.4).
    const appKeys = {
      app0: { c2s: trafficKeys(app!.c2s), s2c: trafficKeys(app!.s2c) },
      app1: { c2s: trafficKeys(expandLabel(app!.c2s, "traffic upd", EMPTY, 32)) },
    };
    for (const f of frames.filter((f) => f.key === "app0" || f.key === "app1")) {
      const k = f.key === "app1" ? appKeys.app1.c2s : appKeys.app0[f.dir];
      const contents = openContents(k, f.counter!, f.payload);
      assert.deepEqual(contents.map(toHex), f.contents_hex ?? [f.content_hex]);
      assert.deepEqual(sealContents(k, f.counter!, contents), f.payload);
    }
    // A batch of two c2s records left as one msg (PROTOCOL §6.3), in one frame.
    assert.ok(
      frames.some((f) =>
        f.dir === "c2s" && f.key !== "none" && f.key !== "hs" && (f.contents_hex ?? [f.content_hex])
          .some((hex) => {
            const m = JSON.parse(new TextDecoder().decode(fromHex(hex!)));
            return m.type === "msg" && m.records?.length >= 2;
          })
      ),
      "the session holds a msg of a batch of two or more",
    );
    const statements = new Map<number, Uint8Array>();
    // Records (§6.1): ek, ct, c, the statement and its signature.
    for (const r of v.records) {
      const k = fromHex(r.k);
      const ek = hmacSha256Sync(k, utf8("securechat/v2 content key\0"));
      assert.equal(toHex(ek), r.ek, `${r.name} ek`);
      const body = utf8(r.body);
      const ct = sealChaCha20Poly1305(
        ek,
        new Uint8Array(12),
        body,
        utf8("securechat/v2 content"),
      );
      assert.equal(toHex(ct), toHex(fromBase64(r.record.ct)), `${r.name} ct`);
      const c = hmacSha256Sync(k, utf8("securechat/v2 commitment\0"), body);
      assert.equal(toHex(c), r.c, `${r.name} c`);
      assert.equal(toHex(c), toHex(fromBase64(r.record.c)), `${r.name} commitment`);
      if (r.record.dir === "s2c") {
        assert.equal(r.record.sig, undefined, "the server's records are not signed");
        continue;
      }
      const to = utf8(r.record.to);
      const st = concat(
        utf8("securechat/v2 message\0"),
        u32be(2),
        fromHex(r.record.sid),
        Uint8Array.of(1),
        u32be(to.length),
        to,
        u64be(r.record.seqno),
        u64be(r.record.ts),
        c,
        sha256(ct),
      );
      assert.equal(toHex(st), r.statement_hex, `${r.name} statement`);
      statements.set(r.record.seqno, st);
    }
    // Each c2s record's batch: its path gives the root of its batch's statements, and the
    // batch's one signature verifies over the batch statement (PROTOCOL §6.1).
    for (const r of v.records.filter((r) => r.record.dir === "c2s")) {
      const { i, n, path } = r.record.batch!;
      const first = r.record.seqno - i;
      const batch = Array.from({ length: n }, (_, j) => leafOf(statements.get(first + j)!));
      const root = rootOf(leafOf(statements.get(r.record.seqno)!), i, n, path.map(fromBase64));
      assert.equal(toHex(root!), toHex(mth(batch)), `${r.name} root`);
      const signed = batchStatementOf(r.record.sid, first, n, root!);
      assert.ok(
        await verify(keys.client, signed, fromBase64(r.record.sig!)),
        `${r.name} signature`,
      );
    }
    assert.ok(
      v.records.some((r) => (r.record.batch?.n ?? 0) >= 2),
      "the session holds a batch of two or more",
    );
  });

  Deno.test(`vectors ${file}: the state machines replay the handshake byte for byte`, async () => {
    const v: Vector = await load(file);
    const hsFrames = v.frames.filter((f) => f.key === "none" || f.key === "hs");
    for (const role of ["client", "server"] as const) {
      const mine: Dir = role === "client" ? "c2s" : "s2c";
      const written: Uint8Array[] = [];
      const conn = replayConn(
        hsFrames.filter((f) => f.dir !== mine).map((f) => fromHex(f.payload_hex)),
        written,
      );
      await runSide(v, role, conn);
      assert.deepEqual(
        written.map(toHex),
        hsFrames.filter((f) => f.dir === mine).map((f) => f.payload_hex),
        `${role} frames`,
      );
    }
  });
}

// ---- replaying one side against recorded frames ----

/**
 * A connection that serves `incoming` frames and puts each frame payload it is sent into
 * `written`. The bytes are a stream, as on TCP: one write may carry several frames
 * (FrameConnection coalesces what is queued together), so they are split by length.
 */
function replayConn(incoming: Uint8Array[], written: Uint8Array[]): FrameConnection {
  let pending: Uint8Array = new Uint8Array(0);
  const queue = incoming.map((p) => concat(u32be(p.length), p));
  const readable = new ReadableStream<Uint8Array>({
    pull: (c) => {
      const next = queue.shift();
      if (next) c.enqueue(next);
      else c.close();
    },
  });
  const conn: ByteStreamConn = {
    readable,
    write: (bytes) => {
      pending = concat(pending, bytes);
      while (pending.length >= 4) {
        const length = new DataView(pending.buffer, pending.byteOffset).getUint32(0);
        if (pending.length < 4 + length) break;
        written.push(pending.slice(4, 4 + length));
        pending = pending.slice(4 + length);
      }
      return Promise.resolve(bytes.length);
    },
    close: () => {},
  };
  return new FrameConnection(conn);
}

function fixedRandomness(v: Vector, role: "client" | "server"): HandshakeRandomness {
  const p = v.inputs[role];
  const queue = [fromHex(p.eph1_private), fromHex(p.eph2_private)];
  return {
    nonce: () => fromHex(p.nonce),
    keyShareSecret: () => queue.shift(),
    now: () => v.inputs.time,
  };
}

async function identity(certPem: string, keyPem: string): Promise<Identity> {
  return {
    certDer: pemDecode(certPem, "CERTIFICATE", "BAD_CERT"),
    signingKey: await importSigningKeyPkcs8(pemDecode(keyPem, "PRIVATE KEY", "INVALID_INPUT")),
  };
}

async function runSide(v: Vector, role: "client" | "server", conn: FrameConnection) {
  const { pki } = v.inputs;
  const trust = await TrustStore.fromPem(pki.ca_cert_pem);
  if (role === "client") {
    return await clientHandshake(conn, {
      identity: await identity(pki.client_cert_pem, pki.client_key_pem),
      trust,
      serverName: pki.server_name,
      groups: v.inputs.client_groups,
      credentials: v.inputs.credentials,
      randomness: fixedRandomness(v, "client"),
    });
  }
  return await serverHandshake(conn, {
    identity: await identity(pki.server_cert_pem, pki.server_key_pem),
    trust,
    groups: v.inputs.server_groups,
    randomness: fixedRandomness(v, "server"),
    authenticate: () => Promise.resolve({ registered: v.inputs.credentials.mode === "register" }),
  });
}

// ---- negative.json ----

interface NegativeCase {
  name: string;
  target: string;
  set: Record<string, string>;
  sign: "before edit" | "after edit";
  code: string;
}

const negatives: { cases: NegativeCase[] } = await load("negative.json");
const v0: Vector = await load(FILES[0]);

/** A live in-memory pair with the vector's PKI (system randomness: real time, fresh keys). */
async function livePair() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [st, ct] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  ]);
  listener.close();
  const { pki } = v0.inputs;
  const trust = await TrustStore.fromPem(pki.ca_cert_pem);
  const clientId = await identity(pki.client_cert_pem, pki.client_key_pem);
  const serverId = await identity(pki.server_cert_pem, pki.server_key_pem);
  const [s, c] = await Promise.all([
    serverHandshake(new FrameConnection(st), {
      identity: serverId,
      trust,
      authenticate: () => Promise.resolve({ registered: false }),
    }),
    clientHandshake(new FrameConnection(ct), {
      identity: clientId,
      trust,
      serverName: pki.server_name,
      credentials: { mode: "login", username: "alice", password: "x" },
    }),
  ]);
  return { s, c, trust, clientId, serverId };
}

const flip = (b: Uint8Array) => (b[b.length - 1] ^= 1, b);

/** A fresh, valid c2s record of session `c`, edited as the case says. */
async function c2sRecord(c: EstablishedSession, key: Identity, nc: NegativeCase, seqno = 1) {
  const { k, ct, c: commitment } = nc.set.body
    ? sealPlaintext(utf8(nc.set.body))
    : sealContent({ kind: "text", text: "negative" });
  const r: MessageRecord = {
    sid: c.sessionId,
    dir: "c2s",
    to: LOBBY,
    seqno,
    ts: Date.now(),
    ct,
    c: commitment,
  };
  const edit = () => {
    if (nc.set.sid) r.sid = nc.set.sid;
    if (nc.set.dir) r.dir = nc.set.dir as Dir;
    if (nc.set.to) r.to = nc.set.to;
    if (nc.set.c) flip(r.c);
    if (nc.set.ct) flip(r.ct);
  };
  if (nc.sign === "after edit") edit();
  await signBatch(key.signingKey, [r]);
  if (nc.sign === "before edit") edit();
  return { r, k: nc.set.k ? flip(k.slice()) : k };
}

async function serverEndsWith(nc: NegativeCase): Promise<string | undefined> {
  if (nc.target === "c2s padding") return openBadPadding();
  const { s, c, clientId } = await livePair();
  const dir = await Deno.makeTempDir({ prefix: "sc-vectors-" });
  try {
    const session = await ChatSession.start(s, { transcripts: transcriptDirectory(dir) });
    const running = session.run({ onMessage: () => {} });
    const send = (content: string | Uint8Array) =>
      c.conn.send(c.records.seal(typeof content === "string" ? utf8(content) : content));
    const { r, k } = await c2sRecord(c, clientId, nc);
    const wire = prepareUserMsg([{ record: r, k }]).wire;
    switch (nc.target) {
      case "c2s twice":
        send(wire);
        send(wire);
        break;
      case "c2s duplicate member":
        send(wire.replace(/}$/, `,"n":1}`));
        break;
      case "c2s frame twice": {
        const payload = c.records.seal(utf8(wire));
        c.conn.send(payload);
        c.conn.send(payload);
        break;
      }
      case "c2s plaintext":
        c.conn.send(utf8(wire));
        break;
      case "c2s key_update not last":
        c.conn.send(c.records.sealContents([utf8('{"type":"key_update"}'), utf8(wire)]));
        break;
      case "c2s two in one record":
        c.conn.send(c.records.sealContents([utf8(wire), utf8(wire)]));
        break;
      default:
        send(wire);
    }
    const end = await running;
    return end.code;
  } finally {
    c.conn.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The record layer a session reads with, given an inner plaintext with non-zero padding. */
function openBadPadding(): string | undefined {
  const keys = { key: new Uint8Array(32).fill(1), iv: new Uint8Array(12).fill(2) };
  const inner = new Uint8Array(256).fill(1);
  inner.set(u32be(2));
  inner.set(utf8("{}"), 4);
  const payload = sealChaCha20Poly1305(keys.key, counterNonce(keys.iv, 0), inner, RECORD_AAD);
  try {
    new RecordLayer(keys, keys).open(payload);
    return undefined;
  } catch (error) {
    return error instanceof SecureChatError ? error.code : String(error);
  }
}

async function clientEndsWith(nc: NegativeCase): Promise<string | undefined> {
  if (nc.target === "s2c handshake") {
    const hsFrames = v0.frames.filter((f) => f.key === "none" || f.key === "hs");
    const incoming = hsFrames.filter((f) => f.dir === "s2c").map((f) => fromHex(f.payload_hex));
    // Tamper with one s2c frame by re-sealing it (keys from the vector's own inputs).
    const which = nc.set.flip === "certificate_verify" ? 1 : 5;
    incoming[which + 1] = await resealTampered(which);
    try {
      await runSide(v0, "client", replayConn(incoming, []));
      return undefined;
    } catch (error) {
      return error instanceof SecureChatError ? error.code : String(error);
    }
  }
  const { s, c, trust, clientId, serverId } = await livePair();
  const dir = await Deno.makeTempDir({ prefix: "sc-vectors-" });
  try {
    const session = await ChatSession.start(c, {
      transcripts: transcriptDirectory(dir),
      relayTrust: trust,
    });
    const running = session.run({ onMessage: () => {} });
    const { k, ct, c: commitment } = sealContent({ kind: "text", text: "relayed" });
    const ts = nc.set.ts ? c.sessionTime - 60 * 60 * 1000 : Date.now();
    const r: MessageRecord = {
      sid: "ab".repeat(16),
      dir: "c2s",
      to: nc.set.to ?? LOBBY,
      seqno: 1,
      ts,
      ct,
      c: commitment,
    };
    await signBatch(nc.set.signer === "server" ? serverId.signingKey : clientId.signingKey, [r]);
    const clientCert = toBase64(clientId.certDer);
    // A relay of the one record (PROTOCOL §6.4), binary on the wire: a batch of one needs no
    // proof.
    const relay = (seqno: number, record: MessageRecord, cert: string | undefined) => {
      const { sig, batch, ...bare } = encodeRecord(record);
      return encodeRelay({
        type: "relay",
        seqno,
        ts: Date.now(),
        author_fp: fingerprintOf(clientId.certDer),
        ...(cert === undefined ? {} : { cert }),
        sig: sig!,
        first: record.seqno - batch!.i,
        n: batch!.n,
        proof: [],
        records: [{ record: bare, k: toBase64(k) }],
      });
    };
    s.conn.send(
      s.records.seal(relay(1, r, nc.set.cert === "omitted" ? undefined : clientCert)),
    );
    if (nc.target === "s2c relay twice") {
      // By default the same record again, naming the certificate the first one introduced.
      let second = r;
      let cert: string | undefined;
      if (nc.set.second === "introduces the certificate again") cert = clientCert;
      if (nc.set.second === "introduces the server certificate under the name") {
        cert = toBase64(serverId.certDer);
      }
      if (nc.set.second === "a new record signed by the server") {
        second = { ...r, seqno: 2 };
        await signBatch(serverId.signingKey, [second]);
      }
      s.conn.send(s.records.seal(relay(2, second, cert)));
    }
    const end = await running;
    return end.code;
  } finally {
    s.conn.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** s2c handshake frame `n` (0 = certificate) of the vector, its MAC or signature flipped, re-sealed. */
function resealTampered(n: number): Promise<Uint8Array> {
  return resealEdited(v0, n, (m) => {
    const field = m.type === "finished" ? "mac" : "sig";
    m[field] = btoa(String.fromCharCode(...flip(fromBase64(m[field] as string))));
  });
}

/** s2c handshake frame `n` (0 = certificate) of vector `v`, opened, edited and re-sealed. */
async function resealEdited(
  v: Vector,
  n: number,
  edit: (m: Record<string, unknown>) => void,
): Promise<Uint8Array> {
  const { group } = v.inputs;
  const serverHello = json(fromHex(v.frames[1].payload_hex));
  const client = await keyAgreement(group).generate(fromHex(v.inputs.client.eph1_private));
  const ss1 = await client.complete(fromBase64(serverHello.key_share.pub));
  const H1 = H([fromHex(v.frames[0].payload_hex), fromHex(v.frames[1].payload_hex)]);
  const hs = hmacSha256Sync(utf8("securechat/v2"), ss1);
  const keys = {
    key: expandLabel(hs, "hs s2c key", H1, 32),
    iv: expandLabel(hs, "hs s2c iv", H1, 12),
  };
  const s2c = v.frames.filter((f) => f.dir === "s2c" && f.key === "hs");
  const m = json(openRecord(keys, n, fromHex(s2c[n].payload_hex)));
  edit(m);
  return sealRecord(keys, n, utf8(JSON.stringify(m)));
}

Deno.test("a client refuses dh_server in x25519mlkem768 after a hybrid phase 1: phase 2 is x25519 (PROTOCOL §4.2) → UNSUPPORTED", async () => {
  const v: Vector = await load("handshake_ed25519_x25519mlkem768.json");
  const incoming = v.frames.filter((f) => f.dir === "s2c" && (f.key === "none" || f.key === "hs"))
    .map((f) => fromHex(f.payload_hex));
  // s2c handshake frames: certificate, certificate_verify, finished, auth_ok, dh_server, …
  const hybrid = await keyAgreement("x25519mlkem768").generate();
  const answer = await keyAgreement("x25519mlkem768").respond(hybrid.share);
  incoming[1 + 4] = await resealEdited(v, 4, (m) => {
    assert.equal(m.type, "dh_server");
    m.key_share = { group: "x25519mlkem768", pub: toBase64(answer.share) };
  });
  await assert.rejects(
    runSide(v, "client", replayConn(incoming, [])),
    (e: unknown) => e instanceof SecureChatError && e.code === "UNSUPPORTED",
  );
});

for (const nc of negatives.cases) {
  Deno.test({
    name: `negative vector: ${nc.name} → ${nc.code}`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const code = nc.target.startsWith("c2s")
        ? await serverEndsWith(nc)
        : await clientEndsWith(nc);
      assert.equal(code, nc.code);
    },
  });
}

Deno.test("negative vectors: every binding of PROTOCOL §6 has a case", () => {
  const names = negatives.cases.map((c) => c.name).join("\n");
  for (
    const binding of [
      "session",
      "direction",
      "recipient",
      "commitment",
      "replay",
      "padding",
      "before this session",
    ]
  ) {
    assert.match(names, new RegExp(binding), binding);
  }
  void sign; // the cases sign with lib/crypto/signature through signBatch
});

// ---- batches.json: one signed batch of 5 (PROTOCOL §6.1) ----

/** A valid record's JSON, parsed and decoded by lib (the shape must accept it). */
function parsedRecord(json: unknown): MessageRecord {
  const parsed = RecordJsonShape.safeParse(json);
  if (!parsed.success) throw new Error(`a valid record refused: ${JSON.stringify(parsed.error)}`);
  return decodeRecord(parsed.data);
}

interface BatchVectors {
  author: { ed25519_seed: string; spki: string };
  other_author: { ed25519_seed: string; spki: string };
  sid: string;
  first: number;
  n: number;
  records: {
    k: string;
    body: string;
    statement_hex: string;
    leaf_hash: string;
    record: Record<string, unknown> & { seqno: number; sig: string; batch: BatchJson };
  }[];
  subtrees: { range: [number, number]; hash: string }[];
  root: string;
  batch_statement_hex: string;
  sig: string;
  outside: { k: string; record: Record<string, unknown> };
  cases: {
    name: string;
    record: number | "outside";
    set: Record<string, unknown>;
    checked_before?: number[];
    code: string;
  }[];
  relays: { indices: number[]; relay: RelayGroupJson; root: string }[];
  relay_cases: { name: string; relay: RelayGroupJson; code: string }[];
}
/** What a relay carries of its batch (PROTOCOL §6.4), as batches.json holds it. */
interface RelayGroupJson {
  sig: string;
  first: number;
  n: number;
  proof: string[];
  records: { record: Record<string, unknown> & { seqno: number }; k: string }[];
}
const batches: BatchVectors = await load("batches.json");

Deno.test("batch vectors: leaves, subtrees, paths, root, batch statement and signature from the text", async () => {
  const b = batches;
  const key = await importVerifyingKeySpki(fromHex(b.author.spki));
  const leaves = b.records.map((r) => leafOf(fromHex(r.statement_hex)));
  assert.deepEqual(leaves.map(toHex), b.records.map((r) => r.leaf_hash));
  for (const { range: [lo, hi], hash } of b.subtrees) {
    assert.equal(toHex(mth(leaves.slice(lo, hi))), hash, `MTH(${lo}..${hi})`);
  }
  assert.equal(toHex(mth(leaves)), b.root);
  const signed = batchStatementOf(b.sid, b.first, b.n, fromHex(b.root));
  assert.equal(signed.length, 93);
  assert.equal(toHex(signed), b.batch_statement_hex);
  assert.ok(await verify(key, signed, fromHex(b.sig)), "the batch signature");
  for (const [j, r] of b.records.entries()) {
    const { i, n, path } = r.record.batch;
    assert.deepEqual([i, n, r.record.seqno], [j, b.n, b.first + j]);
    assert.equal(r.record.sig, toBase64(fromHex(b.sig)), "every record carries the one signature");
    const root = rootOf(leaves[j], i, n, path.map(fromBase64));
    assert.equal(toHex(root!), b.root, `record ${j}'s path gives the root`);
    // The statement is the record's (PROTOCOL §6.1), as lib builds it.
    assert.equal(
      toHex(statement(parsedRecord(r.record))),
      r.statement_hex,
    );
  }
});

/** A case's record: the valid JSON with `set` applied (batches.json "cases"). */
function batchCase(c: BatchVectors["cases"][number]): { json: unknown; other: boolean } {
  const b = batches;
  const base = c.record === "outside" ? b.outside.record : b.records[c.record].record;
  const json = structuredClone(base) as Record<string, unknown> & { batch?: BatchJson };
  let other = false;
  for (const [member, value] of Object.entries(c.set)) {
    const batch = json.batch!;
    switch (member) {
      case "batch_path_of":
        batch.path = [...b.records[value as number].record.batch.path];
        break;
      case "batch_of":
        json.batch = structuredClone(b.records[value as number].record.batch);
        json.sig = b.records[value as number].record.sig;
        break;
      case "batch_i":
        batch.i = value as number;
        break;
      case "batch_n":
        batch.n = value as number;
        break;
      case "batch_flip": {
        const bytes = fromBase64(batch.path[value as number]);
        bytes[0] ^= 1;
        batch.path[value as number] = toBase64(bytes);
        break;
      }
      case "batch_drop_last":
        batch.path.pop();
        break;
      case "batch_truncate_entry":
        batch.path[value as number] = toBase64(fromBase64(batch.path[value as number]).subarray(1));
        break;
      case "batch_pad_to":
        while (batch.path.length < (value as number)) batch.path.push(batch.path[0]);
        break;
      case "sig":
        if (value === null) delete json.sig;
        else json.sig = toBase64(utf8(String(value).padEnd(64, "!")));
        break;
      case "batch":
        delete json.batch;
        break;
      case "author":
        other = true;
        break;
      default:
        json[member] = value;
    }
  }
  return { json, other };
}

for (const c of batches.cases) {
  Deno.test(`batch vector: ${c.name} → ${c.code} (live), and in a file`, async () => {
    const author = {
      fingerprint: "a".repeat(64),
      key: await importVerifyingKeySpki(fromHex(batches.author.spki)),
    };
    const other = {
      fingerprint: "b".repeat(64),
      key: await importVerifyingKeySpki(fromHex(batches.other_author.spki)),
    };
    for (const pathFault of ["PROTOCOL_ERROR", "TAMPERED"] as const) {
      const signatures = new RecordSignatures(pathFault);
      for (const j of c.checked_before ?? []) {
        await signatures.check(author, parsedRecord(batches.records[j].record), `record ${j}`);
      }
      const { json, other: byOther } = batchCase(c);
      const parsed = RecordJsonShape.safeParse(json);
      let code: string;
      if (!parsed.success) code = "PROTOCOL_ERROR"; // the schema: TAMPERED in a file, as always
      else {
        code = await signatures.check(byOther ? other : author, decodeRecord(parsed.data), "case")
          .then(() => "valid", (error) => error.code);
      }
      const want = c.code === "PROTOCOL_ERROR" && parsed.success ? pathFault : c.code;
      assert.equal(code, want, `${c.name} (${pathFault === "TAMPERED" ? "verify" : "live"})`);
    }
  });
}

Deno.test("batch vectors: every record of the batch passes lib's check, live and in a file", async () => {
  const key = await importVerifyingKeySpki(fromHex(batches.author.spki));
  for (const pathFault of ["PROTOCOL_ERROR", "TAMPERED"] as const) {
    const signatures = new RecordSignatures(pathFault);
    for (const r of batches.records) {
      await signatures.check({ fingerprint: "a".repeat(64), key }, parsedRecord(r.record), "r");
    }
  }
});

Deno.test("batch trees: for every n ≤ 32 and i < n, lib's root and path agree with RFC 9162 written from the text; a path of another length fails", () => {
  for (let n = 1; n <= MAX_BATCH; n++) {
    const leaves = Array.from({ length: n }, (_, j) => sha256(utf8(`leaf ${j} of ${n}`)));
    const { root, paths } = merkleTree(leaves);
    assert.equal(toHex(root), toHex(mth(leaves)), `root of ${n}`);
    for (let i = 0; i < n; i++) {
      assert.equal(toHex(rootOf(leaves[i], i, n, paths[i])!), toHex(root), `path ${i} of ${n}`);
      assert.equal(toHex(rootFromPath(leaves[i], i, n, paths[i])!), toHex(root));
      assert.equal(rootFromPath(leaves[i], i, n, [...paths[i], root]), null, `${i} of ${n} long`);
      if (paths[i].length > 0) {
        assert.equal(rootFromPath(leaves[i], i, n, paths[i].slice(1)), null, `${i} of ${n} short`);
      }
    }
  }
});

// ---- batches.json's relays: PROTOCOL §6.4's ROOT, written from the text ----

/** ROOT(0, n) of PROTOCOL §6.4 as written, the leaves by their index; null on a fail. */
function rootOfGroup(
  leafAt: Map<number, Uint8Array>,
  n: number,
  proof: Uint8Array[],
): Uint8Array | null {
  let used = 0;
  let failed = false;
  const root = (lo: number, hi: number): Uint8Array => {
    if (![...leafAt.keys()].some((i) => lo <= i && i < hi)) {
      if (used === proof.length) failed = true;
      return proof[used++] ?? new Uint8Array(32);
    }
    if (hi - lo === 1) return leafAt.get(lo)!;
    let k = 1;
    while (k * 2 < hi - lo) k *= 2;
    const left = root(lo, lo + k);
    return nodeOf(left, root(lo + k, hi));
  };
  const r = root(0, n);
  return failed || used !== proof.length ? null : r;
}

/** A relay around a group, with a hop and an author (what §6.4's checks of the group ignore). */
const relayAround = (group: RelayGroupJson) => ({
  type: "relay",
  seqno: 1,
  ts: 1767225600500,
  author_fp: "a".repeat(64),
  ...group,
});

Deno.test("relay vectors: each relay's proof gives the batch's root, from the text and in lib; its signature verifies; lib's proof and derived paths are the records' own", async () => {
  const b = batches;
  const key = await importVerifyingKeySpki(fromHex(b.author.spki));
  const leaves = b.records.map((r) => leafOf(fromHex(r.statement_hex)));
  const paths = b.records.map((r) => r.record.batch.path.map(fromBase64));
  for (const { indices, relay, root } of b.relays) {
    const proof = relay.proof.map(fromBase64);
    const leafAt = new Map(indices.map((i) => [i, leaves[i]]));
    assert.equal(toHex(rootOfGroup(leafAt, relay.n, proof)!), root, `ROOT of ${indices}`);
    const parsed = RelayMessageShape.safeParse(relayAround(relay));
    assert.ok(parsed.success, `relay of ${indices} refused: ${JSON.stringify(parsed)}`);
    const records = parsed.data.records.map((item) => decodeRecord(item.record));
    assert.deepEqual(records.map((r) => r.seqno - b.first), indices);
    const libLeaves = records.map(leafHash);
    assert.equal(toHex(groupRoot(libLeaves, indices, b.n, proof)!), root);
    const signed = batchStatementOf(b.sid, relay.first, relay.n, fromHex(root));
    assert.ok(await verify(key, signed, fromBase64(relay.sig)), `the signature, ${indices}`);
    assert.deepEqual(
      groupProof(indices, b.n, indices.map((i) => paths[i])).map(toHex),
      proof.map(toHex),
      `lib's proof for ${indices}`,
    );
    if (indices.length === 1) {
      // One record: its path in the tree's left-to-right order (§6.4): the siblings to its left,
      // nearest the root first, then those to its right, nearest the leaf first.
      const i = indices[0];
      const left: Uint8Array[] = [];
      const right: Uint8Array[] = [];
      let [fn, sn] = [i, b.n - 1];
      for (const entry of paths[i]) {
        // RFC 9162 §2.1.3.2's walk says on which side each entry lies.
        if (fn % 2 === 1 || fn === sn) {
          left.unshift(entry);
          while (fn !== 0 && fn % 2 === 0) [fn, sn] = [fn >> 1, sn >> 1];
        } else right.push(entry);
        [fn, sn] = [fn >> 1, sn >> 1];
      }
      assert.deepEqual(proof.map(toHex), [...left, ...right].map(toHex), `one record: ${i}`);
    }
    for (const [at, i] of indices.entries()) {
      assert.deepEqual(
        groupPath(libLeaves, indices, b.n, proof, at)!.map(toHex),
        paths[i].map(toHex),
        `record ${i}'s path derived from the relay of ${indices}`,
      );
    }
  }
});

for (const c of batches.relay_cases) {
  Deno.test(`relay vector: ${c.name} → ${c.code} (live), and in a file`, async () => {
    const author = {
      fingerprint: "a".repeat(64),
      key: await importVerifyingKeySpki(fromHex(batches.author.spki)),
    };
    const parsed = RelayMessageShape.safeParse(relayAround(c.relay));
    for (const pathFault of ["PROTOCOL_ERROR", "TAMPERED"] as const) {
      let code: string;
      if (!parsed.success) code = "PROTOCOL_ERROR"; // the schema: TAMPERED in a file, as always
      else {
        const { sig, first, n, proof } = parsed.data;
        const group = { sig: fromBase64(sig), first, n, proof: proof.map(fromBase64) };
        const records = parsed.data.records.map((item) => decodeRecord(item.record));
        code = await Promise.resolve()
          .then(() => new RecordSignatures(pathFault).checkGroupNow(author, records, group, "case"))
          .then(() => "valid", (error) => error.code);
        // The same verdict from the text: ROOT, then the signature.
        const leafAt = new Map(records.map((r) => [r.seqno - first, leafHash(r)]));
        const root = rootOfGroup(leafAt, n, group.proof);
        const fromText = root === null ? pathFault : await verify(
            author.key,
            batchStatementOf(records[0].sid, first, n, root),
            group.sig,
          )
          ? "valid"
          : "SIG_FAIL";
        assert.equal(code, fromText, `${c.name}: lib and the text disagree`);
      }
      const want = c.code === "PROTOCOL_ERROR" && parsed.success ? pathFault : c.code;
      assert.equal(code, want, `${c.name} (${pathFault === "TAMPERED" ? "verify" : "live"})`);
    }
  });
}

Deno.test("relay trees: for every n ≤ 32 and many sets of records, lib's proof gives the root by ROOT written from the text, and each record's derived path is its own", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let n = 1; n <= MAX_BATCH; n++) {
    const leaves = Array.from({ length: n }, (_, j) => sha256(utf8(`leaf ${j} of ${n}`)));
    const { root, paths } = merkleTree(leaves);
    const sets: number[][] = [];
    if (n <= 6) {
      for (let mask = 1; mask < 1 << n; mask++) {
        sets.push([...Array(n).keys()].filter((i) => mask & (1 << i)));
      }
    } else {
      for (let t = 0; t < 40; t++) {
        const set = [...Array(n).keys()].filter(() => random() < 0.3);
        sets.push(set.length > 0 ? set : [Math.floor(random() * n)]);
      }
      sets.push([...Array(n).keys()]);
    }
    for (const indices of sets) {
      const proof = groupProof(indices, n, indices.map((i) => paths[i]));
      const at = indices.map((i) => leaves[i]);
      const leafAt = new Map(indices.map((i) => [i, leaves[i]]));
      assert.equal(toHex(rootOfGroup(leafAt, n, proof)!), toHex(root), `${indices} of ${n}`);
      assert.equal(toHex(groupRoot(at, indices, n, proof)!), toHex(root));
      if (indices.length === n) assert.equal(proof.length, 0, "a whole batch: no proof");
      for (const [j, i] of indices.entries()) {
        assert.deepEqual(groupPath(at, indices, n, proof, j)!.map(toHex), paths[i].map(toHex));
      }
      assert.equal(groupRoot(at, indices, n, [...proof, root]), null, `${indices} of ${n} long`);
      if (proof.length > 0) {
        assert.equal(groupRoot(at, indices, n, proof.slice(1)), null, `${indices} of ${n} short`);
      }
    }
  }
});
