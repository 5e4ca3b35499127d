/**
 * Writes tests/vectors/protocol/ (PROTOCOL §9): complete v2 sessions with fixed inputs —
 * the real client and server state machines run against each other in memory with fixed
 * nonces, ephemeral keys and time, then a session of records made with fixed content keys
 * and timestamps under the application keys (with a key update) — plus negative.json, the
 * tampered cases each with its one error code. Format: tests/vectors/protocol/README.md.
 *
 *   deno run -A tests/helpers/generate_protocol_vectors.ts            # reuse the stored PKI
 *   deno run -A tests/helpers/generate_protocol_vectors.ts --new-pki  # new CA and keys
 *
 * A script, not a test: nothing in the test suite imports or runs it.
 */
import { concat, fromBase64, sha256, toBase64, toHex, utf8 } from "../../lib/bytes.ts";
import { hmacSha256Sync } from "../../lib/crypto/hkdf.ts";
import { sha256 as sha256Sync } from "#sync-crypto";
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey } from "node:crypto";
import { type KexGroup, keyAgreement, phase2Group } from "../../lib/crypto/kex.ts";
import { importSigningKeyPkcs8 } from "../../lib/crypto/signature.ts";
import { clientHandshake, type Credentials } from "../../lib/handshake/client.ts";
import type { HandshakeRandomness, Identity } from "../../lib/handshake/common.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import {
  deriveMaster,
  derivePhase1,
  deriveSession,
  expandLabel,
  HandshakeTranscript,
  nextTrafficSecret,
  trafficKeys,
} from "../../lib/handshake/key_schedule.ts";
import { openRecord, unpadContent } from "../../lib/handshake/record.ts";
import {
  batchStatement,
  type Body,
  encodeRecord,
  groupProof,
  groupRoot,
  leafHash,
  LOBBY,
  merkleTree,
  type MessageRecord,
  prepareMsg,
  prepareUserMsg,
  sealPlaintext,
  signBatch,
  statement,
  TO_SERVER,
  userRecipient,
} from "../../lib/message/record.ts";
import { initCa, loadCaSigner } from "../../lib/ca/ca.ts";
import { issueCertificate } from "../../lib/ca/issue.ts";
import type { KeyType } from "../../lib/pki/keys.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { TrustStore } from "../../lib/pki/validate.ts";
import type { ByteStreamConn } from "../../lib/wire/connection.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";

const OUT_DIR = new URL("../vectors/protocol/", import.meta.url);
/** 2026-01-01T00:00:00.000Z: the base of every timestamp in the vectors. */
const T0 = 1_767_225_600_000;
const PASSWORD = "correct horse battery staple";

// RFC 7748 §6.1 (X25519) and RFC 5903 §8.1 (P-256) test keys for phase 1, so ss1 is a
// published known answer; phase 2 scalars are SHA-256 of a label (see README.md).
const PHASE1_SCALARS: Record<"x25519" | "p256", { client: string; server: string }> = {
  x25519: {
    client: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    server: "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
  },
  p256: {
    client: "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
    server: "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
  },
};

/**
 * A side's fixed key material for phase 1 and phase 2 (PROTOCOL §4.5, README.md). Phase 1: the
 * ECDH scalar; for the hybrid its ML-KEM part first — the client's seed d‖z (64 bytes), the
 * server's encapsulation randomness m (32 bytes) — then the X25519 scalar (the RFC 7748 one).
 * Phase 2 (of the group's phase 2 group, §4.2): a labelled scalar.
 */
async function secrets(group: KexGroup, role: "client" | "server"): Promise<Uint8Array[]> {
  const eph2 = await labelledScalar(`${group} ${role} eph2`);
  if (group !== "x25519mlkem768") return [hexBytes(PHASE1_SCALARS[group][role]), eph2];
  const mlkem = role === "client" ? ["ml-kem d", "ml-kem z"] : ["ml-kem m"];
  const parts = await Promise.all(
    mlkem.map((p) => labelledScalar(`${group} ${role} phase 1 ${p}`)),
  );
  return [concat(...parts, hexBytes(PHASE1_SCALARS.x25519[role])), eph2];
}

interface Scenario {
  file: string;
  description: string;
  keyType: KeyType;
  groups: KexGroup[];
  credentials: Credentials;
}

const SCENARIOS: Scenario[] = [
  {
    file: "handshake_ed25519_x25519.json",
    description: "Complete v2 session: Ed25519 certificates, X25519, login; records both ways, " +
      "a key update, a refusal, close and receipts both ways",
    keyType: "ed25519",
    groups: ["x25519", "p256"],
    credentials: { mode: "login", username: "alice", password: PASSWORD },
  },
  {
    file: "handshake_rsa2048_p256.json",
    description: "Complete v2 session: RSA-2048 certificates, P-256, register; records both " +
      "ways, a key update, a refusal, close and receipts both ways",
    keyType: "rsa2048",
    groups: ["p256", "x25519"],
    credentials: {
      mode: "register",
      username: "alice",
      password: PASSWORD,
      email: "alice@example.org",
    },
  },
  {
    file: "handshake_ed25519_x25519mlkem768.json",
    description: "Complete v2 session: Ed25519 certificates, the X25519+ML-KEM-768 hybrid, " +
      "login; records both ways, a key update, a refusal, close and receipts both ways",
    keyType: "ed25519",
    groups: ["x25519mlkem768", "x25519", "p256"],
    credentials: { mode: "login", username: "alice", password: PASSWORD },
  },
];

// ---------------------------------------------------------------- PKI

interface StoredPki {
  key_type: KeyType;
  server_name: string;
  ca_cert_pem: string;
  server_cert_pem: string;
  server_key_pem: string;
  client_user: string;
  client_cert_pem: string;
  client_key_pem: string;
}

async function makePki(keyType: KeyType): Promise<StoredPki> {
  const dir = await Deno.makeTempDir({ prefix: "securechat-vector-pki-" });
  try {
    const days = 36_500;
    await initCa(dir, { name: "securechat test vector CA", days, keyType }, false);
    const ca = await loadCaSigner(dir);
    await issueCertificate(
      dir,
      ca,
      { name: "server", profile: "server", dns: ["localhost"], ip: [], days, keyType },
      false,
    );
    await issueCertificate(
      dir,
      ca,
      { name: "alice", profile: "client", dns: [], ip: [], days, keyType },
      false,
    );
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`);
    return {
      key_type: keyType,
      server_name: "localhost",
      ca_cert_pem: await read("ca.pem"),
      server_cert_pem: await read("server.pem"),
      server_key_pem: await read("server.key"),
      client_user: "alice",
      client_cert_pem: await read("alice.pem"),
      client_key_pem: await read("alice.key"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function loadOrMakePki(file: string, keyType: KeyType, fresh: boolean): Promise<StoredPki> {
  if (!fresh) {
    try {
      const old = JSON.parse(await Deno.readTextFile(new URL(file, OUT_DIR)));
      if (old?.inputs?.pki?.key_type === keyType) return old.inputs.pki as StoredPki;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return await makePki(keyType);
}

async function identityOf(certPem: string, keyPem: string): Promise<Identity> {
  return {
    certDer: pemDecode(certPem, "CERTIFICATE", "BAD_CERT"),
    signingKey: await importSigningKeyPkcs8(pemDecode(keyPem, "PRIVATE KEY", "INVALID_INPUT")),
  };
}

// ---------------------------------------------------------------- fixed randomness

function labelledScalar(label: string): Promise<Uint8Array> {
  return sha256(utf8(`securechat/v2 test vector ${label}`));
}

function fixedRandomness(
  group: KexGroup,
  nonce: Uint8Array,
  scalars: Uint8Array[],
): HandshakeRandomness {
  const queue = [group, phase2Group(group)].map((g, i) => ({ group: g, scalar: scalars[i] }));
  return {
    nonce: () => nonce.slice(),
    now: () => T0,
    keyShareSecret: (g) => {
      const next = queue.shift();
      if (g !== next?.group) throw new Error(`unexpected key share request for ${g}`);
      return next.scalar;
    },
  };
}

// ---------------------------------------------------------------- in-memory pipe

interface Written {
  dir: "c2s" | "s2c";
  payload: Uint8Array;
}

/** Two FrameConnections joined back to back; every frame written is logged in order. */
function pipe(log: Written[]): { client: FrameConnection; server: FrameConnection } {
  let toClient!: ReadableStreamDefaultController<Uint8Array>;
  let toServer!: ReadableStreamDefaultController<Uint8Array>;
  const end = (
    dir: "c2s" | "s2c",
    readable: ReadableStream<Uint8Array>,
    peer: () => ReadableStreamDefaultController<Uint8Array>,
  ): ByteStreamConn => ({
    readable,
    write(bytes) {
      // Whole frames, several in one write when they were queued together: each is logged.
      const wire = bytes.slice();
      for (let at = 0; at < wire.length;) {
        const length = new DataView(wire.buffer, at).getUint32(0);
        if (at + 4 + length > wire.length) throw new Error("expected whole frames per write");
        log.push({ dir, payload: wire.slice(at + 4, at + 4 + length) });
        at += 4 + length;
      }
      peer().enqueue(wire);
      return Promise.resolve(bytes.length);
    },
    close() {
      try {
        peer().close();
      } catch {
        // already closed
      }
    },
  });
  const clientReadable = new ReadableStream<Uint8Array>({ start: (c) => void (toClient = c) });
  const serverReadable = new ReadableStream<Uint8Array>({ start: (c) => void (toServer = c) });
  return {
    client: new FrameConnection(end("c2s", clientReadable, () => toServer)),
    server: new FrameConnection(end("s2c", serverReadable, () => toClient)),
  };
}

// ---------------------------------------------------------------- one scenario

type Json = Record<string, unknown>;
const hex = toHex;

interface FrameOut {
  index: number;
  dir: "c2s" | "s2c";
  /** Which key sealed it: none (plaintext), hs, app0, app1 (after the c2s key update). */
  key: "none" | "hs" | "app0" | "app1";
  counter?: number;
  /** The frame's one content; a record of several (PROTOCOL §3.2) has `contents_hex` instead. */
  content_hex?: string;
  contents_hex?: string[];
  payload_hex: string;
}

async function generate(scenario: Scenario, freshPki: boolean): Promise<Json> {
  const group = scenario.groups[0];
  const pki = await loadOrMakePki(scenario.file, scenario.keyType, freshPki);
  const trust = await TrustStore.fromPem(pki.ca_cert_pem);
  const serverId = await identityOf(pki.server_cert_pem, pki.server_key_pem);
  const clientId = await identityOf(pki.client_cert_pem, pki.client_key_pem);
  const nonces = {
    client: await sha256(utf8("client nonce")),
    server: await sha256(utf8("server nonce")),
  };
  const scalars = {
    client: await secrets(group, "client"),
    server: await secrets(group, "server"),
  };

  const log: Written[] = [];
  const { client, server } = pipe(log);
  const [s, c] = await Promise.all([
    serverHandshake(server, {
      identity: serverId,
      trust,
      groups: scenario.groups,
      randomness: fixedRandomness(group, nonces.server, scalars.server),
      authenticate: () => Promise.resolve({ registered: scenario.credentials.mode === "register" }),
    }),
    clientHandshake(client, {
      identity: clientId,
      trust,
      serverName: pki.server_name,
      groups: scenario.groups,
      credentials: scenario.credentials,
      randomness: fixedRandomness(group, nonces.client, scalars.client),
    }),
  ]);
  if (s.sessionId !== c.sessionId) throw new Error("the two sides disagree");

  // The session: records made with fixed content keys and times, sealed by the parties'
  // own record layers (so the counters and keys are the real ones).
  const sid = c.sessionId;
  const contentKey = async (name: string) =>
    await sha256(utf8(`securechat/v2 test vector k ${name}`));
  const records: Json[] = [];
  const session: { dir: "c2s" | "s2c"; contents: string[] }[] = [];
  type Made = { name: string; record: MessageRecord; k: Uint8Array; body: Body };
  const make = async (
    name: string,
    dir: "c2s" | "s2c",
    to: string,
    seqno: number,
    ts: number,
    body: Body,
  ): Promise<Made> => {
    const plaintext = utf8(JSON.stringify(body));
    const { k, ct, c: commitment } = sealPlaintext(plaintext, await contentKey(name));
    return { name, record: { sid, dir, to, seqno, ts, ct, c: commitment }, k, body };
  };
  /** One frame of `msg`s; a client's records signed as one batch (PROTOCOL §6.1, §3.2). */
  const send = async (...made: Made[]) => {
    const dir = made[0].record.dir;
    if (dir === "c2s") await signBatch(clientId.signingKey, made.map((m) => m.record));
    const leaves = made.map((m) => leafHash(m.record));
    const root = dir === "c2s" ? merkleTree(leaves).root : undefined;
    for (const [j, { name, record, k, body }] of made.entries()) {
      records.push({
        name,
        k: hex(k),
        ek: hex(hmacSha256Sync(k, utf8("securechat/v2 content key\0"))),
        c: hex(record.c),
        body: JSON.stringify(body),
        statement_hex: dir === "c2s" ? hex(statement(record)) : null,
        ...(root
          ? {
            leaf_hash: hex(leaves[j]),
            root: hex(root),
            batch_statement_hex: hex(
              batchStatement(sid, made[0].record.seqno, made.length, root),
            ),
          }
          : {}),
        record: encodeRecord(record),
      });
    }
    // A user's batch leaves as one msg (PROTOCOL §6.3); the server's records one msg each.
    const contents = dir === "c2s"
      ? [prepareUserMsg(made.map(({ record, k }) => ({ record, k }))).wire]
      : made.map((m) => prepareMsg(m.record, m.k).wire);
    session.push({ dir, contents });
  };
  await send(
    await make("c2s 1", "c2s", LOBBY, 1, T0 + 1000, { kind: "text", text: "hello, lobby" }),
  );
  await send(
    await make("s2c 1", "s2c", userRecipient("alice"), 1, T0 + 1001, {
      kind: "notice",
      text: "welcome alice; online: alice",
    }),
  );
  session.push({ dir: "c2s", contents: ['{"type":"key_update"}'] });
  // Two records made in one turn: one batch, one signature, one frame (PROTOCOL §6.1, §3.2).
  await send(
    await make("c2s 2", "c2s", TO_SERVER, 2, T0 + 2000, { kind: "who" }),
    await make("c2s 3", "c2s", LOBBY, 3, T0 + 2000, { kind: "text", text: "anyone here?" }),
  );
  session.push({
    dir: "s2c",
    contents: [JSON.stringify({
      type: "refused",
      seqno: 2,
      ts: T0 + 2001,
      of: 2,
      code: "RATE_LIMITED",
    })],
  });
  session.push({ dir: "c2s", contents: ['{"type":"close"}'] });
  session.push({ dir: "s2c", contents: ['{"type":"close"}'] });

  // The key schedule as the state machines ran it (PROTOCOL §4), every intermediate value
  // recorded so an implementer can tell which step differs; each hs frame opened.
  const serverHello = JSON.parse(new TextDecoder().decode(log[1].payload));
  const ss1 = await (await keyAgreement(group).generate(scalars.client[0]))
    .complete(fromBase64(serverHello.key_share.pub));
  const transcript = new HandshakeTranscript();
  transcript.add(log[0].payload);
  transcript.add(log[1].payload);
  const H1 = transcript.hash();
  const p1 = derivePhase1(ss1, H1);
  const hsKeys = { c2s: p1.c2s, s2c: p1.s2c };
  const frames: FrameOut[] = [];
  const hsEnd = { c2s: -1, s2c: -1 };
  const hsCounters = { c2s: 0, s2c: 0 };
  const hashes: Json[] = [];
  let master: ReturnType<typeof deriveMaster> | undefined;
  let ss2: Uint8Array | undefined;
  let hFinal: Uint8Array | undefined;
  for (const [i, w] of log.entries()) {
    hsEnd[w.dir] = i;
    if (i < 2) {
      frames.push({
        index: i,
        dir: w.dir,
        key: "none",
        content_hex: hex(w.payload),
        payload_hex: hex(w.payload),
      });
      continue;
    }
    const counter = hsCounters[w.dir]++;
    const content = unpadContent(
      openRecord(hsKeys[w.dir], counter, w.payload),
    );
    frames.push({
      index: i,
      dir: w.dir,
      key: "hs",
      counter,
      content_hex: hex(content),
      payload_hex: hex(w.payload),
    });
    const m = JSON.parse(new TextDecoder().decode(content));
    if (m.type === "certificate_verify" || m.type === "finished") {
      hashes.push({ frame: i, type: m.type, covers_hash: hex(transcript.hash()) });
    }
    if (m.type === "login" || m.type === "register") continue; // never hashed
    transcript.add(content);
    if (m.type === "dh_server") {
      ss2 = await (await keyAgreement(phase2Group(group)).generate(scalars.client[1]))
        .complete(fromBase64(m.key_share.pub));
      master = deriveMaster(p1.handshakeSecret, ss2);
    }
    if (m.type === "finished" && w.dir === "s2c" && master) hFinal = transcript.hash();
  }
  const appSecrets = deriveSession(master!.master, hFinal!);
  const appC2s1 = nextTrafficSecret(appSecrets.app.c2s);
  const keySchedule = {
    ss1: hex(ss1),
    H1: hex(H1),
    hs: hex(p1.handshakeSecret),
    hs_key_c2s: hex(p1.c2s.key),
    hs_iv_c2s: hex(p1.c2s.iv),
    hs_key_s2c: hex(p1.s2c.key),
    hs_iv_s2c: hex(p1.s2c.iv),
    fin1_client: hex(p1.clientFinishedKey),
    fin1_server: hex(p1.serverFinishedKey),
    handshake_hashes: hashes,
    ss2: hex(ss2!),
    derived: hex(expandLabel(p1.handshakeSecret, "derived", new Uint8Array(0), 32)),
    master: hex(master!.master),
    fin2_client: hex(master!.clientFinishedKey),
    fin2_server: hex(master!.serverFinishedKey),
    Hfinal: hex(hFinal!),
    session_id: hex(appSecrets.sessionId),
    app_c2s_0: hex(appSecrets.app.c2s),
    app_s2c_0: hex(appSecrets.app.s2c),
    app_c2s_1: hex(appC2s1),
    traffic: {
      app0_c2s: traffic(appSecrets.app.c2s),
      app0_s2c: traffic(appSecrets.app.s2c),
      app1_c2s: traffic(appC2s1),
    },
  };
  const counters = { c2s: 0, s2c: 0 };
  let c2sKey: "app0" | "app1" = "app0";
  for (const item of session) {
    const layer = item.dir === "c2s" ? c.records : s.records;
    const contents = item.contents.map(utf8);
    frames.push({
      index: frames.length,
      dir: item.dir,
      key: item.dir === "c2s" ? c2sKey : "app0",
      counter: counters[item.dir]++,
      ...(contents.length === 1
        ? { content_hex: hex(contents[0]) }
        : { contents_hex: contents.map(hex) }),
      payload_hex: hex(layer.sealContents(contents)),
    });
    if (item.contents[0] === '{"type":"key_update"}') {
      c.records.updateSend();
      c2sKey = "app1";
      counters.c2s = 0;
    }
  }
  // Handshake frames' contents (and counters) come from opening them with a fresh layer
  // is the test's job; the generator records only what went on the wire for those.
  return {
    description: scenario.description,
    spec: "docs/PROTOCOL.md v2 §9",
    generator: "tests/helpers/generate_protocol_vectors.ts",
    expected: "valid",
    inputs: {
      group,
      client_groups: scenario.groups,
      server_groups: scenario.groups,
      credentials: scenario.credentials,
      time: T0,
      client: {
        nonce: hex(nonces.client),
        eph1_private: hex(scalars.client[0]),
        eph2_private: hex(scalars.client[1]),
      },
      server: {
        nonce: hex(nonces.server),
        eph1_private: hex(scalars.server[0]),
        eph2_private: hex(scalars.server[1]),
      },
      pki,
    },
    session_id: sid,
    session_time: T0,
    key_schedule: keySchedule,
    handshake_frames: { c2s_last: hsEnd.c2s, s2c_last: hsEnd.s2c },
    records,
    frames,
  };
}

function traffic(secret: Uint8Array): { key: string; iv: string } {
  const k = trafficKeys(secret);
  return { key: hex(k.key), iv: hex(k.iv) };
}

function hexBytes(text: string): Uint8Array {
  return Uint8Array.from(text.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** Negative cases, as data (README.md "negative.json"): the test applies each and wants its code. */
const NEGATIVES = {
  description: "Tampered v2 sessions and records, each with the one error code it must produce " +
    "(PROTOCOL §3.2, §4.6, §6.3, §6.4); the test builds each from a fresh valid one",
  cases: [
    {
      name: "record moved from another session (sid)",
      target: "c2s record",
      set: { sid: "ff".repeat(16) },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "record moved to the other direction",
      target: "c2s record",
      set: { dir: "s2c" },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "record addressed to an invalid recipient set",
      target: "c2s record",
      set: { to: "everyone" },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "recipient changed after signing (moved recipient)",
      target: "c2s record",
      set: { to: "user:carol" },
      sign: "before edit",
      code: "SIG_FAIL",
    },
    {
      name: "commitment changed after signing",
      target: "c2s record",
      set: { c: "flip" },
      sign: "before edit",
      code: "SIG_FAIL",
    },
    {
      name: "signed commitment that does not match the content",
      target: "c2s record",
      set: { c: "flip" },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "ciphertext changed after signing",
      target: "c2s record",
      set: { ct: "flip" },
      sign: "before edit",
      code: "SIG_FAIL",
    },
    {
      name: "another content key",
      target: "c2s k",
      set: { k: "flip" },
      sign: "after edit",
      code: "DECRYPT_FAIL",
    },
    {
      name: "seqno of an accepted record again (replay in the session)",
      target: "c2s twice",
      set: {},
      sign: "after edit",
      code: "REPLAY",
    },
    {
      name: "a server-only body kind from a client",
      target: "c2s body",
      set: { body: '{"kind":"notice","text":"x"}' },
      sign: "after edit",
      code: "PROTOCOL_ERROR",
    },
    {
      name: "a duplicate member in the msg",
      target: "c2s duplicate member",
      set: {},
      sign: "after edit",
      code: "PROTOCOL_ERROR",
    },
    {
      name: "the same sealed frame twice on the wire",
      target: "c2s frame twice",
      set: {},
      sign: "after edit",
      code: "DECRYPT_FAIL",
    },
    {
      name: "a plaintext frame where a record is due",
      target: "c2s plaintext",
      set: {},
      sign: "after edit",
      code: "DECRYPT_FAIL",
    },
    {
      name: "non-zero record padding",
      target: "c2s padding",
      set: {},
      sign: "after edit",
      code: "PROTOCOL_ERROR",
    },
    {
      name: "server phase 2 Finished MAC flipped",
      target: "s2c handshake",
      set: { flip: "phase 2 finished" },
      sign: "after edit",
      code: "HANDSHAKE_FAIL",
    },
    {
      name: "server certificate_verify flipped",
      target: "s2c handshake",
      set: { flip: "certificate_verify" },
      sign: "after edit",
      code: "SIG_FAIL",
    },
    {
      name: "relayed record moved to another recipient",
      target: "s2c relay",
      set: { to: "user:carol" },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "relayed record from before this session (an old message replayed)",
      target: "s2c relay",
      set: { ts: "one hour before the session" },
      sign: "after edit",
      code: "REPLAY",
    },
    {
      name: "the same relayed record twice in one session",
      target: "s2c relay twice",
      set: {},
      sign: "after edit",
      code: "REPLAY",
    },
    {
      name: "relayed record signed by someone else",
      target: "s2c relay",
      set: { signer: "server" },
      sign: "after edit",
      code: "SIG_FAIL",
    },
    {
      name: "a relay naming an author certificate this session was never sent",
      target: "s2c relay",
      set: { cert: "omitted" },
      sign: "after edit",
      code: "PROTOCOL_ERROR",
    },
    {
      name: "an author certificate introduced twice in one session",
      target: "s2c relay twice",
      set: { second: "introduces the certificate again" },
      sign: "after edit",
      code: "PROTOCOL_ERROR",
    },
    {
      name: "a certificate introduced again with other bytes under the name it holds",
      target: "s2c relay twice",
      set: { second: "introduces the server certificate under the name" },
      sign: "after edit",
      code: "TAMPERED",
    },
    {
      name: "another party's record named with an introduced certificate",
      target: "s2c relay twice",
      set: { second: "a new record signed by the server" },
      sign: "after edit",
      code: "SIG_FAIL",
    },
  ],
};

// ---- batches.json: one signed batch of 5 records, and what a verifier must refuse ----

const ED25519_PKCS8_PREFIX = "302e020100300506032b657004220420";

/** A fixed Ed25519 key: its seed is SHA-256 of a label (Ed25519 signs deterministically). */
async function fixedEd25519(label: string) {
  const seed = await sha256(utf8(label));
  const pkcs8 = hexBytes(ED25519_PKCS8_PREFIX + hex(seed));
  const spki = new Uint8Array(
    createPublicKey(createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" }))
      .export({ format: "der", type: "spki" }),
  );
  return { seed, spki, signingKey: await importSigningKeyPkcs8(pkcs8) };
}

/** Every subtree hash of RFC 9162's MTH over leaves[lo, hi), parents after children. */
function subtrees(leaves: Uint8Array[], lo: number, hi: number, out: Json[]): Uint8Array {
  if (hi - lo === 1) return leaves[lo];
  let k = 1;
  while (k * 2 < hi - lo) k *= 2;
  const left = subtrees(leaves, lo, lo + k, out);
  const right = subtrees(leaves, lo + k, hi, out);
  const node = sha256Sync(Uint8Array.of(1), left, right);
  out.push({ range: [lo, hi], hash: hex(node) });
  return node;
}

async function batchVectors(): Promise<Json> {
  const author = await fixedEd25519("securechat/v2 test vector batch author");
  const other = await fixedEd25519("securechat/v2 test vector batch other author");
  const sid = "5a".repeat(16);
  const first = 3;
  const bodies: [string, Body][] = [
    [LOBBY, { kind: "text", text: "one" }],
    [userRecipient("bob"), { kind: "text", text: "two, to bob" }],
    [TO_SERVER, { kind: "who" }],
    [LOBBY, { kind: "text", text: "four" }],
    [LOBBY, { kind: "text", text: "five" }],
  ];
  const made: { k: Uint8Array; body: Body; record: MessageRecord }[] = [];
  for (const [j, [to, body]] of bodies.entries()) {
    const { k, ct, c } = sealPlaintext(
      utf8(JSON.stringify(body)),
      await sha256(utf8(`securechat/v2 test vector k batch ${j}`)),
    );
    made.push({
      k,
      body,
      record: { sid, dir: "c2s", to, seqno: first + j, ts: T0 + 10 * j, ct, c },
    });
  }
  await signBatch(author.signingKey, made.map((m) => m.record));
  const leaves = made.map((m) => leafHash(m.record));
  const nodes: Json[] = [];
  const root = subtrees(leaves, 0, leaves.length, nodes);
  // A sixth record, signed on its own: the batch's signature must not pass for it.
  const { k: k6, ct: ct6, c: c6 } = sealPlaintext(
    utf8(JSON.stringify({ kind: "text", text: "six" })),
    await sha256(utf8("securechat/v2 test vector k batch 5")),
  );
  const outside: MessageRecord = {
    sid,
    dir: "c2s",
    to: LOBBY,
    seqno: first + 5,
    ts: T0 + 50,
    ct: ct6,
    c: c6,
  };
  await signBatch(author.signingKey, [outside]);
  const relays = relayVectors(made, first, root);
  return {
    description: "One batch of 5 c2s records signed once (PROTOCOL §6.1): leaves, subtrees, " +
      "paths, root, batch statement, signature; then cases a verifier must refuse, each with " +
      "its code (live codes: PROTOCOL_ERROR for the schema and a path that does not fit i and n, " +
      "SIG_FAIL for a signature that does not verify; verify reports PROTOCOL_ERROR as TAMPERED)",
    spec: "docs/PROTOCOL.md v2 §6.1, §9",
    generator: "tests/helpers/generate_protocol_vectors.ts",
    expected: "valid batch; invalid cases",
    author: { ed25519_seed: hex(author.seed), spki: hex(author.spki) },
    other_author: { ed25519_seed: hex(other.seed), spki: hex(other.spki) },
    sid,
    first,
    n: made.length,
    records: made.map(({ k, body, record }, j) => ({
      k: hex(k),
      body: JSON.stringify(body),
      statement_hex: hex(statement(record)),
      leaf_hash: hex(leaves[j]),
      record: encodeRecord(record),
    })),
    subtrees: nodes,
    root: hex(root),
    batch_statement_hex: hex(batchStatement(sid, first, made.length, root)),
    sig: hex(made[0].record.sig!),
    outside: { k: hex(k6), record: encodeRecord(outside) },
    // Each case starts from records[record] (or `outside`) as JSON, replaces the members of
    // `set` (inside `batch` for batch_*), and is checked with the author's key by a verifier
    // that has first checked the records listed in `checked_before` (a cache must not pass it).
    cases: [
      {
        name: "the path of another record of the batch",
        record: 2,
        set: { batch_path_of: 3 },
        code: "SIG_FAIL",
      },
      {
        name: "i changed: the record claims another position",
        record: 2,
        set: { batch_i: 3 },
        code: "SIG_FAIL",
      },
      {
        name: "i changed to a position whose path is shorter",
        record: 2,
        set: { batch_i: 4 },
        code: "PROTOCOL_ERROR",
      },
      { name: "n changed, the path still fits", record: 2, set: { batch_n: 6 }, code: "SIG_FAIL" },
      {
        name: "n changed, the path no longer fits",
        record: 2,
        set: { batch_n: 4 },
        code: "PROTOCOL_ERROR",
      },
      { name: "a path entry flipped", record: 1, set: { batch_flip: 0 }, code: "SIG_FAIL" },
      {
        name: "the path one entry short",
        record: 1,
        set: { batch_drop_last: true },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "the path one entry long",
        record: 4,
        set: { batch_path_of: 0 },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "a record of the batch with its ts changed",
        record: 3,
        set: { ts: T0 + 31 },
        code: "SIG_FAIL",
      },
      {
        name: "a record of the batch moved to another recipient",
        record: 0,
        set: { to: "user:carol" },
        code: "SIG_FAIL",
      },
      {
        name: "a record of the batch moved to another session",
        record: 0,
        set: { sid: "a5".repeat(16) },
        code: "SIG_FAIL",
      },
      {
        name: "the batch's signature on a record outside it",
        record: "outside",
        set: { batch_of: 4 },
        code: "SIG_FAIL",
      },
      {
        name: "another signature, same batch statement, after a valid check (cache)",
        record: 1,
        set: { sig: "garbage" },
        checked_before: [0],
        code: "SIG_FAIL",
      },
      {
        name: "the batch's signature claimed by another author, after a valid check (cache)",
        record: 1,
        set: { author: "other" },
        checked_before: [0],
        code: "SIG_FAIL",
      },
      { name: "schema: i not below n", record: 2, set: { batch_i: 5 }, code: "PROTOCOL_ERROR" },
      {
        name: "schema: n above MAX_BATCH (32)",
        record: 2,
        set: { batch_n: 33 },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "schema: n of 0",
        record: 0,
        set: { batch_n: 0, batch_i: 0 },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "schema: i not below the record's seqno",
        record: 0,
        set: { seqno: 1, batch_i: 1 },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "schema: a path entry of 31 bytes",
        record: 1,
        set: { batch_truncate_entry: 0 },
        code: "PROTOCOL_ERROR",
      },
      {
        name: "schema: 6 path entries",
        record: 1,
        set: { batch_pad_to: 6 },
        code: "PROTOCOL_ERROR",
      },
      { name: "schema: batch without sig", record: 1, set: { sig: null }, code: "PROTOCOL_ERROR" },
      {
        name: "schema: sig without batch",
        record: 1,
        set: { batch: null },
        code: "PROTOCOL_ERROR",
      },
      { name: "no sig and no batch", record: 1, set: { sig: null, batch: null }, code: "SIG_FAIL" },
    ],
    relays: relays.valid,
    relay_cases: relays.cases,
  };
}

/** A record as a relay carries it (PROTOCOL §6.4): without `sig` and `batch`. */
function relayedJson(record: MessageRecord): Json {
  const { sig: _sig, batch: _batch, ...rest } = encodeRecord(record);
  return rest;
}

/**
 * Relays of the batch (PROTOCOL §6.4): subsets of its records with their proof (made from the
 * records' own paths, as a server makes it) and the root ROOT gives; then whole relays (the
 * members sig, first, n, proof, records) a recipient must refuse, each with its code.
 */
function relayVectors(
  made: { k: Uint8Array; record: MessageRecord }[],
  first: number,
  root: Uint8Array,
): { valid: Json[]; cases: Json[] } {
  const n = made.length;
  const sig = toBase64(made[0].record.sig!);
  const relayOf = (indices: number[]) => ({
    sig,
    first,
    n,
    proof: groupProof(indices, n, indices.map((i) => made[i].record.batch!.path)).map(toBase64),
    records: indices.map((i) => ({ record: relayedJson(made[i].record), k: toBase64(made[i].k) })),
  });
  const subsets = [[0, 1, 2, 3, 4], [2], [0, 1, 3], [3, 4], [4]];
  const valid = subsets.map((indices) => {
    const relay = relayOf(indices);
    const got = groupRoot(
      indices.map((i) => leafHash(made[i].record)),
      indices,
      n,
      relay.proof.map(fromBase64),
    );
    if (!got || hex(got) !== hex(root)) throw new Error(`relay of ${indices}: not the root`);
    return { indices, relay, root: hex(root) };
  });
  type Relay = ReturnType<typeof relayOf>;
  const changed = (indices: number[], change: (r: Relay) => void) => {
    const relay = relayOf(indices);
    change(relay);
    return relay;
  };
  const flip = (entry: string) => {
    const bytes = fromBase64(entry);
    bytes[0] ^= 1;
    return toBase64(bytes);
  };
  const whole = (i: number) => ({ ...encodeRecord(made[i].record) });
  const cases: [string, Relay, string][] = [
    ["a proof entry flipped", changed([0, 1, 3], (r) => r.proof[0] = flip(r.proof[0])), "SIG_FAIL"],
    ["a proof entry missing", changed([0, 1, 3], (r) => r.proof.pop()), "PROTOCOL_ERROR"],
    [
      "a proof entry extra",
      changed([0, 1, 3], (r) => r.proof.push(r.proof[0])),
      "PROTOCOL_ERROR",
    ],
    [
      "an extra proof entry on a whole batch",
      changed([0, 1, 2, 3, 4], (r) => {
        r.proof.push(valid[1].relay.proof[0]);
      }),
      "PROTOCOL_ERROR",
    ],
    [
      "proof entries out of order",
      changed([2], (r) => r.proof.reverse()),
      "SIG_FAIL",
    ],
    [
      "records out of order",
      changed([0, 1, 2, 3, 4], (r) => r.records.reverse()),
      "PROTOCOL_ERROR",
    ],
    [
      "a record repeated",
      changed([3, 4], (r) => r.records.splice(1, 0, r.records[0])),
      "PROTOCOL_ERROR",
    ],
    [
      "a record outside first … first + n − 1",
      changed(
        [3, 4],
        (r) => r.records.push({ record: relayedJson(made[0].record), k: r.records[0].k }),
      ),
      "PROTOCOL_ERROR",
    ],
    [
      "a record of another session beside one of this",
      changed(
        [3, 4],
        (r) => (r.records[1].record as Record<string, unknown>).sid = "a5".repeat(16),
      ),
      "PROTOCOL_ERROR",
    ],
    [
      "the one record moved to another session",
      changed([4], (r) => (r.records[0].record as Record<string, unknown>).sid = "a5".repeat(16)),
      "SIG_FAIL",
    ],
    [
      "a record still carrying sig and batch",
      changed([3, 4], (r) => r.records[0].record = whole(3)),
      "PROTOCOL_ERROR",
    ],
    [
      "a record still carrying sig",
      changed([3, 4], (r) => {
        const { batch: _batch, ...withSig } = whole(3);
        r.records[0].record = withSig;
      }),
      "PROTOCOL_ERROR",
    ],
    [
      "a record moved to another recipient",
      changed([0, 1, 3], (r) => (r.records[2].record as Record<string, unknown>).to = "user:carol"),
      "SIG_FAIL",
    ],
    ["first changed, the proof still fits", changed([2], (r) => r.first = first - 1), "SIG_FAIL"],
    [
      "first changed, a record beyond the batch",
      changed([4], (r) => r.first = first - 1),
      "PROTOCOL_ERROR",
    ],
    [
      "first changed, a record before it",
      changed([0, 1], (r) => r.first = first + 1),
      "PROTOCOL_ERROR",
    ],
    ["n changed, the proof still fits", changed([2], (r) => r.n = n + 1), "SIG_FAIL"],
    [
      "n changed, the proof no longer fits",
      changed([0, 1, 2, 3, 4], (r) => r.n = n + 1),
      "PROTOCOL_ERROR",
    ],
    ["n below a record's place", changed([0, 1, 2, 3, 4], (r) => r.n = n - 1), "PROTOCOL_ERROR"],
    ["no records", changed([2], (r) => r.records.pop()), "PROTOCOL_ERROR"],
    [
      "a proof entry of 31 bytes",
      changed([2], (r) => r.proof[0] = toBase64(fromBase64(r.proof[0]).subarray(1))),
      "PROTOCOL_ERROR",
    ],
    ["another signature", changed([0, 1, 2, 3, 4], (r) => r.sig = flip(r.sig)), "SIG_FAIL"],
  ];
  return {
    valid,
    cases: cases.map(([name, relay, code]) => ({ name, relay, code })),
  };
}

const fresh = Deno.args.includes("--new-pki");
for (const scenario of SCENARIOS) {
  const vector = await generate(scenario, fresh);
  await Deno.writeTextFile(new URL(scenario.file, OUT_DIR), JSON.stringify(vector, null, 2) + "\n");
  console.log(`wrote ${scenario.file}`);
}
await Deno.writeTextFile(
  new URL("negative.json", OUT_DIR),
  JSON.stringify(NEGATIVES, null, 2) + "\n",
);
console.log("wrote negative.json");
await Deno.writeTextFile(
  new URL("batches.json", OUT_DIR),
  JSON.stringify(await batchVectors(), null, 2) + "\n",
);
console.log("wrote batches.json");
