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
import { concat, fromBase64, sha256, toHex, utf8 } from "../../lib/bytes.ts";
import { hmacSha256Sync } from "../../lib/crypto/hkdf.ts";
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
  type Body,
  encodeRecord,
  LOBBY,
  type MessageRecord,
  prepareMsg,
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
  content_hex: string;
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
  const session: { dir: "c2s" | "s2c"; content: string }[] = [];
  const make = async (
    name: string,
    dir: "c2s" | "s2c",
    to: string,
    seqno: number,
    ts: number,
    body: Body,
  ) => {
    const plaintext = utf8(JSON.stringify(body));
    const { k, ct, c: commitment } = sealPlaintext(plaintext, await contentKey(name));
    const record: MessageRecord = { sid, dir, to, seqno, ts, ct, c: commitment };
    if (dir === "c2s") await signBatch(clientId.signingKey, [record]);
    const { wire } = prepareMsg(dir, record, k);
    records.push({
      name,
      k: hex(k),
      ek: hex(hmacSha256Sync(k, utf8("securechat/v2 content key\0")).subarray(0, 16)),
      c: hex(commitment),
      body: JSON.stringify(body),
      statement_hex: dir === "c2s" ? hex(statement(record)) : null,
      record: encodeRecord(record),
    });
    session.push({ dir, content: wire });
  };
  await make("c2s 1", "c2s", LOBBY, 1, T0 + 1000, { kind: "text", text: "hello, lobby" });
  await make("s2c 1", "s2c", userRecipient("alice"), 1, T0 + 1001, {
    kind: "notice",
    text: "welcome alice; online: alice",
  });
  session.push({ dir: "c2s", content: '{"type":"key_update"}' });
  await make("c2s 2", "c2s", TO_SERVER, 2, T0 + 2000, { kind: "who" });
  session.push({
    dir: "s2c",
    content: JSON.stringify({
      type: "refused",
      seqno: 2,
      ts: T0 + 2001,
      of: 2,
      code: "RATE_LIMITED",
    }),
  });
  session.push({ dir: "c2s", content: '{"type":"close"}' });
  session.push({ dir: "s2c", content: '{"type":"close"}' });

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
    const content = utf8(item.content);
    frames.push({
      index: frames.length,
      dir: item.dir,
      key: item.dir === "c2s" ? c2sKey : "app0",
      counter: counters[item.dir]++,
      content_hex: hex(content),
      payload_hex: hex(layer.seal(content)),
    });
    if (item.content === '{"type":"key_update"}') {
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
