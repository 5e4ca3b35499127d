/**
 * Regenerates the PROTOCOL §9 test vectors in tests/vectors/protocol/ (format:
 * tests/vectors/protocol/README.md).
 *
 *   deno run -A tests/helpers/generate_protocol_vectors.ts            # reuse the stored PKI
 *   deno run -A tests/helpers/generate_protocol_vectors.ts --new-pki  # make a new CA and leaves
 *
 * It runs the real client and server state machines against each other over an
 * in-memory pipe with fixed randomness (nonces, ephemeral scalars), records every
 * frame, and writes the intermediate values as lib/handshake/key_schedule.ts computes
 * them; tests/protocol_vectors_test.ts then recomputes them independently. The PKI is
 * made once with lib/pki (100-year validity, because the handshake validates
 * certificates against the current clock) and afterwards read back from the existing
 * vector files, so a rerun without --new-pki reproduces every file byte for byte.
 *
 * A script, not a test: nothing in the test suite imports or runs it.
 */
import { concat, fromHex, sha256, toBase64, toHex, utf8 } from "../../lib/bytes.ts";
import { counterNonce, importAesGcmKey, open, seal } from "../../lib/crypto/aead.ts";
import { hkdfExtract } from "../../lib/crypto/hkdf.ts";
import { KEX_GROUPS, type KexGroup, keyAgreement } from "../../lib/crypto/kex.ts";
import { importSigningKeyPkcs8, sign, type SigningKey } from "../../lib/crypto/signature.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { clientHandshake, type Credentials } from "../../lib/handshake/client.ts";
import type {
  EstablishedSession,
  HandshakeRandomness,
  Identity,
} from "../../lib/handshake/common.ts";
import {
  deriveSession,
  expandLabel,
  finishedMac,
  HandshakeTranscript,
  LABELS,
  nextTrafficSecret,
  PHASE1_SALT,
  signatureInput,
  trafficKeys,
} from "../../lib/handshake/key_schedule.ts";
import { serverHandshake } from "../../lib/handshake/server.ts";
import { initCa, loadCaSigner } from "../../lib/pki/ca.ts";
import { issueCertificate } from "../../lib/pki/issue.ts";
import type { KeyType } from "../../lib/pki/keys.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { TrustStore } from "../../lib/pki/validate.ts";
import {
  ChatSender,
  messageKeyFor,
  msgDigest,
  msgFrame,
  type SealedMsg,
} from "../../lib/session/chat_channel.ts";
import type { ByteStreamConn } from "../../lib/wire/connection.ts";
import { FrameConnection } from "../../lib/wire/connection.ts";
import type { MsgBodyJson } from "../../lib/wire/messages.ts";

const OUT_DIR = new URL("../vectors/protocol/", import.meta.url);
const EMPTY = new Uint8Array(0);
const SEALED_AAD = utf8("securechat/v1 sealed");
const MSG_AAD = utf8("securechat/v1 msg");

/** 2026-01-01T00:00:00.000Z: the base of every timestamp in the vectors. */
const T0 = 1_767_225_600_000;
const PASSWORD = "correct horse battery staple";
/**
 * ChatSender stamps its key with the real clock but is given fixed timestamps: without
 * this, a fixed `now` an hour past the real clock would insert an automatic key_update.
 */
const NO_AUTO = {
  keyUpdateMessages: Number.MAX_SAFE_INTEGER,
  keyUpdateMs: Number.MAX_SAFE_INTEGER,
};

// RFC 7748 §6.1 (X25519) and RFC 5903 §8.1 (P-256) test keys for phase 1, so ss1 is a
// published known answer; phase 2 scalars are SHA-256 of a label (see README.md).
const RFC_SCALARS = {
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
 * The hybrid's fixed material is its ML-KEM part followed by the RFC 7748 X25519
 * scalar (so the X25519 half of ss1 is the published answer): the client's is the
 * ML-KEM seed d‖z (64 bytes), the server's the encapsulation randomness m (32 bytes).
 */
async function phase1Secrets(group: KexGroup): Promise<{ client: Uint8Array; server: Uint8Array }> {
  if (group !== "x25519mlkem768") {
    return {
      client: fromHex(RFC_SCALARS[group].client),
      server: fromHex(RFC_SCALARS[group].server),
    };
  }
  return {
    client: concat(
      await labelledScalar("x25519mlkem768 client phase 1 ml-kem d"),
      await labelledScalar("x25519mlkem768 client phase 1 ml-kem z"),
      fromHex(RFC_SCALARS.x25519.client),
    ),
    server: concat(
      await labelledScalar("x25519mlkem768 server phase 1 ml-kem m"),
      fromHex(RFC_SCALARS.x25519.server),
    ),
  };
}

/** Phase 2: SHA-256 of a label per 32-byte part (the hybrid: d, z, x25519 / m, x25519). */
async function phase2Secret(group: KexGroup, role: "client" | "server"): Promise<Uint8Array> {
  if (group !== "x25519mlkem768") return await labelledScalar(`${group} ${role} phase 2`);
  const parts = role === "client" ? ["ml-kem d", "ml-kem z", "x25519"] : ["ml-kem m", "x25519"];
  const bytes = await Promise.all(
    parts.map((p) => labelledScalar(`${group} ${role} phase 2 ${p}`)),
  );
  return concat(...bytes);
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
    description:
      "Complete session: Ed25519 certificates, X25519, login; one msg each way, a key_update, close both ways",
    keyType: "ed25519",
    groups: ["x25519", "p256"],
    credentials: { mode: "login", username: "alice", password: PASSWORD },
  },
  {
    file: "handshake_rsa2048_p256.json",
    description:
      "Complete session: RSA-2048 certificates, P-256, register; one msg each way, a key_update, close both ways",
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
    description:
      "Complete session: Ed25519 certificates, the X25519+ML-KEM-768 hybrid, login; one msg each way, a key_update, close both ways",
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
  return sha256(utf8(`securechat/v1 test vector ${label}`));
}

function fixedRandomness(
  group: KexGroup,
  nonce: Uint8Array,
  scalars: Uint8Array[],
): HandshakeRandomness {
  const queue = [...scalars];
  return {
    nonce: () => nonce.slice(),
    keyShareSecret: (g) => {
      const scalar = queue.shift();
      if (g !== group || !scalar) throw new Error(`unexpected key share request for ${g}`);
      return scalar;
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
      const wire = bytes.slice();
      const length = new DataView(wire.buffer).getUint32(0);
      if (length !== wire.length - 4) throw new Error("expected one whole frame per write");
      log.push({ dir, payload: wire.slice(4) });
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

// ---------------------------------------------------------------- helpers

const hex = toHex;
type Json = Record<string, unknown>;

function parse(payload: Uint8Array): Json {
  return JSON.parse(new TextDecoder().decode(payload));
}

async function hashOf(payloads: Uint8Array[]): Promise<Uint8Array> {
  const t = new HandshakeTranscript();
  for (const p of payloads) t.add(p);
  return await t.hash();
}

async function sealWith(
  keys: { key: Uint8Array; iv: Uint8Array },
  counter: number,
  plaintext: Uint8Array,
): Promise<Uint8Array> {
  return await seal(
    await importAesGcmKey(keys.key),
    counterNonce(keys.iv, counter),
    plaintext,
    SEALED_AAD,
  );
}

function sealedPayload(ct: Uint8Array): Uint8Array {
  return utf8(JSON.stringify({ type: "sealed", ct: toBase64(ct) }));
}

function msgAad(seqno: number, ts: number): Uint8Array {
  const view = new DataView(new ArrayBuffer(16));
  view.setBigUint64(0, BigInt(seqno));
  view.setBigUint64(8, BigInt(ts));
  return concat(MSG_AAD, new Uint8Array(view.buffer));
}

function flipByte(bytes: Uint8Array, index = 0): Uint8Array {
  const out = bytes.slice();
  out[index] ^= 0x01;
  return out;
}

// ---------------------------------------------------------------- one scenario

interface FrameRecord {
  index: number;
  dir: "c2s" | "s2c";
  phase: "handshake" | "session";
  type: string;
  payload: Uint8Array;
  inner?: Uint8Array;
  innerType?: string;
  hashed: boolean;
  recordKey?: string;
  counter?: number;
}

interface Generated {
  vector: Json;
  /** What the negative vectors need to re-seal and re-sign tampered frames. */
  ctx: {
    file: string;
    group: KexGroup;
    frames: FrameRecord[];
    hsKeys: Record<"c2s" | "s2c", { key: Uint8Array; iv: Uint8Array }>;
    chatC2s0: Uint8Array;
    clientKey: SigningKey;
    msgs: { frame: FrameRecord; msg: SealedMsg }[];
    clientCertDer: Uint8Array;
  };
}

async function generate(scenario: Scenario, freshPki: boolean): Promise<Generated> {
  const group = scenario.groups[0];
  const pki = await loadOrMakePki(scenario.file, scenario.keyType, freshPki);
  const trust = await TrustStore.fromPem(pki.ca_cert_pem);
  const serverId = await identityOf(pki.server_cert_pem, pki.server_key_pem);
  const clientId = await identityOf(pki.client_cert_pem, pki.client_key_pem);

  const clientNonce = Uint8Array.from({ length: 32 }, (_, i) => i);
  const serverNonce = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
  const { client: c1, server: s1 } = await phase1Secrets(group);
  const c2 = await phase2Secret(group, "client");
  const s2 = await phase2Secret(group, "server");
  const kex = keyAgreement(group);

  const log: Written[] = [];
  const { client, server } = pipe(log);
  const creds = scenario.credentials;
  const [est_s, est_c] = await Promise.all([
    serverHandshake(server, {
      identity: serverId,
      trust,
      randomness: fixedRandomness(group, serverNonce, [s1, s2]),
      authenticate: (req) => {
        if (req.username !== creds.username || req.password !== creds.password) {
          return Promise.reject(new SecureChatError("AUTH_FAIL", "wrong credentials"));
        }
        return Promise.resolve({ registered: req.mode === "register" });
      },
    }),
    clientHandshake(client, {
      identity: clientId,
      trust,
      serverName: pki.server_name,
      credentials: creds,
      groups: scenario.groups,
      randomness: fixedRandomness(group, clientNonce, [c1, c2]),
    }),
  ]) as [EstablishedSession, EstablishedSession];
  await client.flush();
  await server.flush();
  if (est_c.sessionId !== est_s.sessionId) throw new Error("session ids differ");

  // ---- phase 1, recomputed from the two plaintext frames
  const [hello, serverHello] = log;
  const serverPub = fromBase64Field(parse(serverHello.payload), "key_share", "pub");
  const ss1 = await (await kex.generate(c1)).complete(serverPub);
  const h1 = await hashOf([hello.payload, serverHello.payload]);
  const hs = await hkdfExtract(PHASE1_SALT, ss1);
  const hsKeys = {
    c2s: {
      key: await expandLabel(hs, LABELS.hsKey("c2s"), h1, 16),
      iv: await expandLabel(hs, LABELS.hsIv("c2s"), h1, 12),
    },
    s2c: {
      key: await expandLabel(hs, LABELS.hsKey("s2c"), h1, 16),
      iv: await expandLabel(hs, LABELS.hsIv("s2c"), h1, 12),
    },
  };
  const finServer = await expandLabel(hs, LABELS.finished("server"), h1, 32);
  const finClient = await expandLabel(hs, LABELS.finished("client"), h1, 32);

  // ---- every handshake frame, sealed ones opened with the phase 1 keys
  const counters = { c2s: 0, s2c: 0 };
  const frames: FrameRecord[] = [];
  for (const [index, w] of log.entries()) {
    const outer = parse(w.payload);
    const record: FrameRecord = {
      index,
      dir: w.dir,
      phase: "handshake",
      type: String(outer.type),
      payload: w.payload,
      hashed: true,
    };
    if (outer.type === "sealed") {
      const counter = counters[w.dir]++;
      const keys = hsKeys[w.dir];
      record.inner = await open(
        await importAesGcmKey(keys.key),
        counterNonce(keys.iv, counter),
        fromBase64Field(outer, "ct"),
        SEALED_AAD,
      );
      record.innerType = String(parse(record.inner).type);
      record.hashed = record.innerType !== "login" && record.innerType !== "register";
      record.recordKey = `hs_${w.dir}`;
      record.counter = counter;
    }
    frames.push(record);
  }
  const hashedBytes = (f: FrameRecord) => f.inner ?? f.payload;
  const find = (dir: string, innerType: string, nth = 0) => {
    const found = frames.filter((f) => f.dir === dir && f.innerType === innerType)[nth];
    if (!found) throw new Error(`no ${dir} ${innerType}`);
    return found;
  };
  /** The handshake hash over every hashed frame before (or up to and including) `frame`. */
  const hashPoint = async (frame: FrameRecord, including: boolean) => {
    const covered = frames.filter((f) =>
      f.hashed && (including ? f.index <= frame.index : f.index < frame.index)
    );
    return {
      covers: covered.map((f) => f.index),
      hash: await hashOf(covered.map(hashedBytes)),
    };
  };

  const hashes: Json[] = [];
  const signaturePoint = async (
    name: string,
    role: "client" | "server",
    phase: 1 | 2,
    frame: FrameRecord,
  ) => {
    const { covers, hash } = await hashPoint(frame, false);
    const input = signatureInput(role, phase, hash);
    const sig = fromBase64Field(parse(frame.inner!), "sig");
    const key = role === "client" ? clientId.signingKey : serverId.signingKey;
    if (hex(await sign(key, input)) !== hex(sig)) throw new Error(`${name} is not deterministic`);
    hashes.push({
      name,
      frame: frame.index,
      covers,
      hash: hex(hash),
      signed_input: hex(input),
      sig: hex(sig),
    });
  };
  const finishedPoint = async (name: string, key: Uint8Array, frame: FrameRecord) => {
    const { covers, hash } = await hashPoint(frame, false);
    const mac = await finishedMac(key, hash);
    if (hex(mac) !== hex(fromBase64Field(parse(frame.inner!), "mac"))) {
      throw new Error(`${name} MAC mismatch`);
    }
    hashes.push({ name, frame: frame.index, covers, hash: hex(hash), mac: hex(mac) });
  };
  await signaturePoint(
    "server_certificate_verify_1",
    "server",
    1,
    find("s2c", "certificate_verify"),
  );
  await finishedPoint("server_finished", finServer, find("s2c", "finished"));
  await signaturePoint(
    "client_certificate_verify_1",
    "client",
    1,
    find("c2s", "certificate_verify"),
  );
  await finishedPoint("client_finished", finClient, find("c2s", "finished"));
  await signaturePoint(
    "client_certificate_verify_2",
    "client",
    2,
    find("c2s", "certificate_verify", 1),
  );
  await signaturePoint(
    "server_certificate_verify_2",
    "server",
    2,
    find("s2c", "certificate_verify", 1),
  );
  const final = await hashPoint(find("s2c", "certificate_verify", 1), true);
  hashes.push({ name: "Hfinal", frame: null, covers: final.covers, hash: hex(final.hash) });

  // ---- phase 2
  const dhServerPub = fromBase64Field(parse(find("s2c", "dh_server").inner!), "key_share", "pub");
  const ss2 = await (await kex.generate(c2)).complete(dhServerPub);
  const derived = await expandLabel(hs, LABELS.derived, EMPTY, 32);
  const master = await hkdfExtract(derived, ss2);
  const session = await deriveSession(hs, ss2, final.hash);
  if (hex(session.sessionId) !== est_c.sessionId) throw new Error("session id mismatch");
  const ctl = {
    c2s: await expandLabel(master, LABELS.control("c2s"), final.hash, 32),
    s2c: await expandLabel(master, LABELS.control("s2c"), final.hash, 32),
  };
  const chatC2s0 = session.chat.c2s.slice();
  const chatS2c0 = session.chat.s2c.slice();
  if (hex(chatC2s0) !== hex(est_c.chatSendSecret)) throw new Error("chat c2s mismatch");
  if (hex(chatS2c0) !== hex(est_s.chatSendSecret)) throw new Error("chat s2c mismatch");
  const chatC2s1 = await nextTrafficSecret(chatC2s0);
  const traffic = async (secret: Uint8Array) => {
    const k = await trafficKeys(secret);
    return { secret: hex(secret), key: hex(k.key), iv: hex(k.iv) };
  };

  // ---- session frames: msgs through ChatSender with fixed timestamps, then close both ways
  const clientSender = await ChatSender.create(chatC2s0.slice(), clientId.signingKey, NO_AUTO);
  const serverSender = await ChatSender.create(chatS2c0.slice(), serverId.signingKey, NO_AUTO);
  const plan: { dir: "c2s" | "s2c"; ts: number; body: MsgBodyJson; secret: string }[] = [
    {
      dir: "c2s",
      ts: T0 + 1000,
      body: { kind: "text", text: "hello, server" },
      secret: "chat_c2s_0",
    },
    {
      dir: "s2c",
      ts: T0 + 1500,
      body: { kind: "notice", text: "welcome, alice" },
      secret: "chat_s2c_0",
    },
    { dir: "c2s", ts: T0 + 2000, body: { kind: "key_update" }, secret: "chat_c2s_0" },
    {
      dir: "c2s",
      ts: T0 + 2500,
      body: { kind: "text", text: "after the key update" },
      secret: "chat_c2s_1",
    },
  ];
  const secretsByName: Record<string, Uint8Array> = {
    chat_c2s_0: chatC2s0,
    chat_s2c_0: chatS2c0,
    chat_c2s_1: chatC2s1,
  };
  const msgs: { frame: FrameRecord; msg: SealedMsg }[] = [];
  const msgExtras = new Map<number, Json>();
  for (const step of plan) {
    const sender = step.dir === "c2s" ? clientSender : serverSender;
    const sealed = await sender.seal(step.body, step.ts);
    if (sealed.length !== 1) throw new Error("unexpected automatic key update");
    const [m] = sealed;
    const frame: FrameRecord = {
      index: frames.length,
      dir: step.dir,
      phase: "session",
      type: "msg",
      payload: utf8(JSON.stringify(msgFrame(m))),
      inner: utf8(JSON.stringify(step.body)),
      innerType: step.body.kind,
      hashed: false,
    };
    msgExtras.set(frame.index, {
      seqno: m.seqno,
      ts: m.ts,
      chat_secret: step.secret,
      message_key: hex(await messageKeyFor(secretsByName[step.secret], m.seqno)),
      nonce: hex(new Uint8Array(12)),
      aad: hex(msgAad(m.seqno, m.ts)),
      ct: hex(m.ct),
      digest: hex(await msgDigest(m.seqno, m.ts, m.ct)),
      sig: hex(m.sig),
    });
    frames.push(frame);
    msgs.push({ frame, msg: m });
  }
  const closeInner = utf8(JSON.stringify({ type: "close" }));
  for (const [dir, est] of [["c2s", est_c], ["s2c", est_s]] as const) {
    frames.push({
      index: frames.length,
      dir,
      phase: "session",
      type: "sealed",
      payload: sealedPayload(await est.control.seal(closeInner)),
      inner: closeInner,
      innerType: "close",
      hashed: false,
      recordKey: `ctl_${dir}`,
      counter: 0,
    });
  }
  client.close();
  server.close();

  const frameJson = (f: FrameRecord): Json => {
    const out: Json = { index: f.index, dir: f.dir, phase: f.phase, type: f.type };
    if (f.innerType) out.inner_type = f.innerType;
    if (f.phase === "handshake") out.hashed = f.hashed;
    if (f.recordKey) {
      out.record_key = f.recordKey;
      out.record_counter = f.counter;
    }
    Object.assign(out, msgExtras.get(f.index) ?? {});
    if (f.inner) out.inner_hex = hex(f.inner);
    out.payload_hex = hex(f.payload);
    return out;
  };

  // The server's share may depend on the client's (the hybrid's ML-KEM ciphertext).
  const clientShare = async (secret: Uint8Array) => (await kex.generate(secret)).share;
  const serverShare = async (secret: Uint8Array, client: Uint8Array) =>
    hex((await kex.respond(await clientShare(client), secret)).share);
  const vector: Json = {
    description: scenario.description,
    spec: "docs/PROTOCOL.md (securechat protocol version 1), sections 2-6 and 9",
    generator: "tests/helpers/generate_protocol_vectors.ts",
    expected: "valid: both state machines complete; every frame and value below is reproduced",
    inputs: {
      group,
      client_groups: scenario.groups,
      server_groups: [...KEX_GROUPS],
      credentials: scenario.credentials,
      client: {
        nonce: hex(clientNonce),
        eph1_private: hex(c1),
        eph1_public: hex(await clientShare(c1)),
        eph2_private: hex(c2),
        eph2_public: hex(await clientShare(c2)),
      },
      server: {
        nonce: hex(serverNonce),
        eph1_private: hex(s1),
        eph1_public: await serverShare(s1, c1),
        eph2_private: hex(s2),
        eph2_public: await serverShare(s2, c2),
      },
      pki,
    },
    key_schedule: {
      ss1: hex(ss1),
      H1: hex(h1),
      hs: hex(hs),
      key_c2s: hex(hsKeys.c2s.key),
      iv_c2s: hex(hsKeys.c2s.iv),
      key_s2c: hex(hsKeys.s2c.key),
      iv_s2c: hex(hsKeys.s2c.iv),
      fin_server: hex(finServer),
      fin_client: hex(finClient),
      handshake_hashes: hashes,
      ss2: hex(ss2),
      Hfinal: hex(final.hash),
      derived: hex(derived),
      master: hex(master),
      session_id: est_c.sessionId,
      chat_c2s_0: hex(chatC2s0),
      chat_s2c_0: hex(chatS2c0),
      ctl_c2s: hex(ctl.c2s),
      ctl_s2c: hex(ctl.s2c),
    },
    chat_secrets: {
      chat_c2s_0: hex(chatC2s0),
      chat_c2s_1: hex(chatC2s1),
      chat_s2c_0: hex(chatS2c0),
    },
    control_keys: {
      ctl_c2s: await traffic(ctl.c2s),
      ctl_s2c: await traffic(ctl.s2c),
    },
    frames: frames.map(frameJson),
  };
  return {
    vector,
    ctx: {
      file: scenario.file,
      group,
      frames,
      hsKeys,
      chatC2s0,
      clientKey: clientId.signingKey,
      msgs,
      clientCertDer: clientId.certDer,
    },
  };
}

function fromBase64Field(object: Json, ...path: string[]): Uint8Array {
  let value: unknown = object;
  for (const key of path) value = (value as Json)[key];
  const text = String(value);
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// ---------------------------------------------------------------- negative vectors

async function negatives(ed: Generated["ctx"], rsa: Generated["ctx"]): Promise<Json> {
  const cases: Json[] = [];

  /** Replaces handshake frame `index` of `ctx`: plain frames by a new object, sealed ones re-sealed. */
  const handshakeCase = async (
    ctx: Generated["ctx"],
    name: string,
    description: string,
    index: number,
    edit: (message: Json) => Json | Uint8Array,
    expected: string,
  ) => {
    const frame = ctx.frames[index];
    const target = frame.dir === "s2c" ? "client" : "server";
    const replace: Json = { index };
    if (frame.type === "sealed") {
      const edited = edit(parse(frame.inner!));
      const inner = edited instanceof Uint8Array ? edited : utf8(JSON.stringify(edited));
      const ct = await sealWith(ctx.hsKeys[frame.dir], frame.counter!, inner);
      replace.inner_hex = hex(inner);
      replace.payload_hex = hex(sealedPayload(ct));
    } else {
      const edited = edit(parse(frame.payload));
      const payload = edited instanceof Uint8Array ? edited : utf8(JSON.stringify(edited));
      replace.payload_hex = hex(payload);
    }
    cases.push({ name, description, base: ctx.file, target, replace, expected_error: expected });
  };
  const idx = (ctx: Generated["ctx"], dir: string, innerType: string, nth = 0) =>
    ctx.frames.filter((f) =>
      f.phase === "handshake" && f.dir === dir && (f.innerType ?? f.type) === innerType
    )[nth].index;
  const flipB64 = (field: string) => (m: Json) => ({
    ...m,
    [field]: toBase64(flipByte(fromBase64Field(m, field))),
  });

  // -- the client against tampered server frames
  await handshakeCase(
    ed,
    "server_hello_group_changed",
    "server_hello answers with p256 although the client offered x25519 first (and only a share for it)",
    idx(ed, "s2c", "server_hello"),
    (m) => ({ ...m, key_share: { ...(m.key_share as Json), group: "p256" } }),
    "UNSUPPORTED",
  );
  await handshakeCase(
    ed,
    "server_hello_low_order_share",
    "server_hello carries the all-zero X25519 u-coordinate (a low-order point): all-zero secret",
    idx(ed, "s2c", "server_hello"),
    (m) => ({ ...m, key_share: { group: "x25519", pub: toBase64(new Uint8Array(32)) } }),
    "BAD_KEY_SHARE",
  );
  await handshakeCase(
    ed,
    "server_hello_unknown_member",
    "server_hello with an extra member: objects are strict (a parse error, not a crypto failure)",
    idx(ed, "s2c", "server_hello"),
    (m) => ({ ...m, extra: 1 }),
    "PROTOCOL_ERROR",
  );
  {
    const index = idx(ed, "s2c", "certificate");
    const frame = ed.frames[index];
    const outer = parse(frame.payload);
    const ct = flipByte(fromBase64Field(outer, "ct"), 5);
    cases.push({
      name: "server_certificate_ciphertext_flipped",
      description: "one ciphertext byte of the sealed server certificate flipped: AEAD fails",
      base: ed.file,
      target: "client",
      replace: { index, payload_hex: hex(sealedPayload(ct)) },
      expected_error: "DECRYPT_FAIL",
    });
  }
  await handshakeCase(
    ed,
    "server_presents_client_certificate",
    "the server's certificate message carries alice's client certificate (EKU clientAuth, no SAN)",
    idx(ed, "s2c", "certificate"),
    (m) => ({ ...m, cert: toBase64(ed.clientCertDer) }),
    "BAD_CERT",
  );
  await handshakeCase(
    ed,
    "server_certificate_verify_1_sig_flipped",
    "first byte of the server's phase 1 signature flipped (re-sealed, so the record is valid)",
    idx(ed, "s2c", "certificate_verify"),
    flipB64("sig"),
    "SIG_FAIL",
  );
  await handshakeCase(
    ed,
    "server_finished_mac_flipped",
    "first byte of the server Finished MAC flipped (re-sealed)",
    idx(ed, "s2c", "finished"),
    flipB64("mac"),
    "HANDSHAKE_FAIL",
  );
  await handshakeCase(
    ed,
    "auth_ok_other_user",
    "auth_ok names another user than the one that logged in",
    idx(ed, "s2c", "auth_ok"),
    (m) => ({ ...m, username: "mallory" }),
    "PROTOCOL_ERROR",
  );
  await handshakeCase(
    ed,
    "dh_server_group_changed",
    "dh_server names p256 although phase 1 used x25519",
    idx(ed, "s2c", "dh_server"),
    (m) => ({ ...m, key_share: { ...(m.key_share as Json), group: "p256" } }),
    "UNSUPPORTED",
  );
  await handshakeCase(
    ed,
    "server_certificate_verify_2_sig_flipped",
    "first byte of the server's phase 2 signature flipped (re-sealed)",
    idx(ed, "s2c", "certificate_verify", 1),
    flipB64("sig"),
    "SIG_FAIL",
  );
  await handshakeCase(
    rsa,
    "rsa_server_certificate_verify_1_sig_flipped",
    "RSA-2048: first byte of the server's phase 1 signature flipped (re-sealed)",
    idx(rsa, "s2c", "certificate_verify"),
    flipB64("sig"),
    "SIG_FAIL",
  );
  await handshakeCase(
    rsa,
    "p256_server_hello_off_curve",
    "P-256: the server share's last byte changed, so the point is not on the curve",
    idx(rsa, "s2c", "server_hello"),
    (m) => {
      const share = m.key_share as Json;
      return {
        ...m,
        key_share: { ...share, pub: toBase64(flipByte(fromBase64Field(share, "pub"), 64)) },
      };
    },
    "BAD_KEY_SHARE",
  );
  await handshakeCase(
    rsa,
    "p256_server_hello_compressed_point",
    "P-256: the server share sent as a 33-byte compressed point, which the protocol refuses",
    idx(rsa, "s2c", "server_hello"),
    (m) => {
      const share = m.key_share as Json;
      const point = fromBase64Field(share, "pub");
      const compressed = concat(Uint8Array.of(2 + (point[64] & 1)), point.subarray(1, 33));
      return { ...m, key_share: { ...share, pub: toBase64(compressed) } };
    },
    "BAD_KEY_SHARE",
  );

  // -- the server against tampered client frames
  await handshakeCase(
    ed,
    "hello_group_not_offered",
    "hello's key share names x448, which hello.groups does not list (and no one supports)",
    idx(ed, "c2s", "hello"),
    (m) => ({ ...m, key_share: { ...(m.key_share as Json), group: "x448" } }),
    "UNSUPPORTED",
  );
  await handshakeCase(
    ed,
    "hello_group_swapped_to_p256",
    "hello's key share relabelled p256 (listed and allowed) while still holding 32 X25519 bytes",
    idx(ed, "c2s", "hello"),
    (m) => ({ ...m, key_share: { ...(m.key_share as Json), group: "p256" } }),
    "BAD_KEY_SHARE",
  );
  await handshakeCase(
    ed,
    "hello_version_2",
    "hello with version 2",
    idx(ed, "c2s", "hello"),
    (m) => ({ ...m, version: 2 }),
    "UNSUPPORTED",
  );
  await handshakeCase(
    ed,
    "hello_noncanonical_base64_nonce",
    "hello nonce in base64 whose unused last bits are not zero (non-canonical)",
    idx(ed, "c2s", "hello"),
    (m) => {
      const text = String(m.nonce);
      // 32 bytes: 43 characters and one '='; the 43rd carries 2 unused bits.
      const last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
      const i = last.indexOf(text[42]);
      return { ...m, nonce: text.slice(0, 42) + last[i ^ 1] + text.slice(43) };
    },
    "PROTOCOL_ERROR",
  );
  await handshakeCase(
    ed,
    "client_certificate_verify_1_sig_flipped",
    "first byte of the client's phase 1 signature flipped (re-sealed)",
    idx(ed, "c2s", "certificate_verify"),
    flipB64("sig"),
    "SIG_FAIL",
  );
  await handshakeCase(
    ed,
    "client_finished_mac_flipped",
    "first byte of the client Finished MAC flipped (re-sealed)",
    idx(ed, "c2s", "finished"),
    flipB64("mac"),
    "HANDSHAKE_FAIL",
  );
  await handshakeCase(
    ed,
    "login_user_not_certificate_cn",
    "login as bob with alice's certificate",
    idx(ed, "c2s", "login"),
    (m) => ({ ...m, username: "bob" }),
    "AUTH_FAIL",
  );
  await handshakeCase(
    ed,
    "client_certificate_verify_2_sig_flipped",
    "first byte of the client's phase 2 signature flipped (re-sealed)",
    idx(ed, "c2s", "certificate_verify", 1),
    flipB64("sig"),
    "SIG_FAIL",
  );

  // -- ChatReceiver against tampered c2s msg frames (c2s msgs: seqno 1, 2 = key_update, 3)
  const [m1, m2, m3] = ed.msgs.filter((m) => m.frame.dir === "c2s");
  const payloadOf = (m: SealedMsg) => hex(utf8(JSON.stringify(msgFrame(m))));
  const resign = async (m: SealedMsg): Promise<SealedMsg> => ({
    ...m,
    sig: await sign(ed.clientKey, await msgDigest(m.seqno, m.ts, m.ct)),
  });
  const chatCase = (
    name: string,
    description: string,
    sequence: SealedMsg[],
    expected: string,
    now = sequence[sequence.length - 1].ts,
  ) =>
    cases.push({
      name,
      description,
      base: ed.file,
      target: "chat_receiver",
      dir: "c2s",
      now,
      msgs: sequence.map(payloadOf),
      expected_error: expected,
    });
  chatCase("msg_seqno_gap", "the first message arrives with seqno 2", [
    { ...m1.msg, seqno: 2 },
  ], "PROTOCOL_ERROR");
  chatCase("msg_replayed", "message 1 accepted, then the same frame again", [
    m1.msg,
    m1.msg,
  ], "REPLAY");
  chatCase(
    "msg_seqno_rewritten",
    "message 1 accepted; message 3 relabelled seqno 2 (the signature binds the seqno)",
    [m1.msg, { ...m3.msg, seqno: 2 }],
    "SIG_FAIL",
  );
  chatCase(
    "msg_ts_changed",
    "message 1 with ts + 1 ms",
    [{ ...m1.msg, ts: m1.msg.ts + 1 }],
    "SIG_FAIL",
  );
  chatCase(
    "msg_stale",
    "message 1 received 5 minutes and 1 ms after its ts",
    [m1.msg],
    "STALE",
    m1.msg.ts + 5 * 60 * 1000 + 1,
  );
  chatCase("msg_sig_flipped", "message 1 with the first signature byte flipped", [
    { ...m1.msg, sig: flipByte(m1.msg.sig) },
  ], "SIG_FAIL");
  chatCase(
    "msg_ct_flipped_resigned",
    "message 1 with one ciphertext byte flipped and re-signed by alice's key: AEAD fails",
    [await resign({ ...m1.msg, ct: flipByte(m1.msg.ct) })],
    "DECRYPT_FAIL",
  );
  {
    // Message 3 sealed and signed under the pre-update key: the receiver has moved on.
    const stale = await ChatSender.create(ed.chatC2s0.slice(), ed.clientKey, NO_AUTO);
    await stale.seal({ kind: "text", text: "hello, server" }, m1.msg.ts);
    await stale.seal({ kind: "text", text: "filler" }, m2.msg.ts);
    const [old] = await stale.seal({ kind: "text", text: "after the key update" }, m3.msg.ts);
    chatCase(
      "msg_under_old_key_after_key_update",
      "messages 1 and 2 (key_update) accepted; message 3 sealed and signed under the old key",
      [m1.msg, m2.msg, old],
      "DECRYPT_FAIL",
    );
    const bad = await ChatSender.create(ed.chatC2s0.slice(), ed.clientKey, NO_AUTO);
    const [shout] = await bad.seal(
      { kind: "shout", text: "x" } as unknown as MsgBodyJson,
      m1.msg.ts,
    );
    chatCase(
      "msg_body_unknown_kind",
      "a correctly sealed and signed message whose body has an unknown kind",
      [shout],
      "PROTOCOL_ERROR",
    );
  }

  return {
    description:
      "Negative vectors: tampered variants of the handshake and msg frames, each with the one error code it must produce",
    spec: "docs/PROTOCOL.md sections 2-6 and 8.1",
    generator: "tests/helpers/generate_protocol_vectors.ts",
    expected: "invalid: every case is rejected with exactly expected_error",
    cases,
  };
}

// ---------------------------------------------------------------- main

async function writeJson(name: string, value: unknown): Promise<void> {
  await Deno.writeTextFile(new URL(name, OUT_DIR), JSON.stringify(value, null, 2) + "\n");
  console.log(`wrote tests/vectors/protocol/${name}`);
}

if (import.meta.main) {
  const freshPki = Deno.args.includes("--new-pki");
  await Deno.mkdir(OUT_DIR, { recursive: true });
  const generated: Generated[] = [];
  for (const scenario of SCENARIOS) {
    const g = await generate(scenario, freshPki);
    await writeJson(scenario.file, g.vector);
    generated.push(g);
  }
  await writeJson("negative.json", await negatives(generated[0].ctx, generated[1].ctx));
  // The vectors are part of the repository: keep them in `deno fmt` form.
  const files = [...SCENARIOS.map((s) => s.file), "negative.json"].map((f) =>
    new URL(f, OUT_DIR).pathname
  );
  const fmt = await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", ...files] })
    .output();
  if (!fmt.success) throw new Error(new TextDecoder().decode(fmt.stderr));
}
