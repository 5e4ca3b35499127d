/**
 * Test PKI and transcripts made with the real tools: `openssl` issues a CA and
 * client/server leaf certificates (the extensions the protocol requires), and
 * transcripts are written by TranscriptWriter with lines really signed by the
 * leaf keys.
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { join } from "node:path";
import { ByteBuilder, fromHex, fromUtf8, randomBytes, toBase64, toHex } from "../lib/bytes.ts";
import { importSigningKeyPkcs8, sign, type SigningKey } from "../lib/crypto/signature.ts";
import {
  decodeLine,
  encodeLine,
  encodeRecord,
  groupProof,
  type Line,
  lineEncoding,
  LineShape,
  LOBBY,
  type MessageRecord,
  type PreparedLine,
  prepareMsg,
  prepareUserMsg,
  sealContent,
  signBatch,
  userRecipient,
  wholeRecordOfGroup,
} from "../lib/message/record.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { type Receipt, receiptSignedData } from "../lib/transcript/receipt.ts";
import { TranscriptWriter } from "../lib/transcript/writer.ts";

export type KeyAlg = "rsa" | "p256" | "ed25519";

export interface Party {
  name: string;
  certPath: string;
  keyPath: string;
  certDer: Uint8Array;
  pkcs8: Uint8Array;
  signer: SigningKey;
}

export interface Pki {
  dir: string;
  caPath: string;
  caPem: string;
  caDer: Uint8Array;
  client: Party;
  server: Party;
  others: Party[];
}

export interface PkiOptions {
  alg?: KeyAlg;
  clientName?: string;
  caName?: string;
  /** openssl `YYYYMMDDHHMMSSZ`; default: from now, for `days`. */
  notBefore?: string;
  notAfter?: string;
  /** Directory to create the PKI in; default a new temp dir. */
  dir?: string;
  /** More client certificates (relay authors), in `Pki.others`. */
  others?: string[];
}

const NEWKEY: Record<KeyAlg, string[]> = {
  rsa: ["-newkey", "rsa:2048"],
  p256: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
  ed25519: ["-newkey", "ed25519"],
};

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (out.code !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

export function pemToDer(pem: string): Uint8Array {
  const body = pem.replace(/-----(BEGIN|END) [A-Z0-9 ]+-----/g, "").replace(/\s+/g, "");
  const bin = atob(body);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function caConfig(dir: string, alg: KeyAlg): string {
  return `[ ca ]
default_ca = tca
[ tca ]
dir = ${dir}
database = ${dir}/index.txt
new_certs_dir = ${dir}/newcerts
serial = ${dir}/serial
crlnumber = ${dir}/crlnumber
default_md = ${alg === "ed25519" ? "default" : "sha256"}
policy = pol
unique_subject = no
copy_extensions = none
email_in_dn = no
[ pol ]
commonName = supplied
[ ca_ext ]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ client_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[ server_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
`;
}

/** A CA with one client (clientAuth, CN = user name) and one server (serverAuth, DNS:localhost). */
export async function makePki(options: PkiOptions = {}): Promise<Pki> {
  const alg = options.alg ?? "ed25519";
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "sc-pki-" });
  await Deno.mkdir(join(dir, "newcerts"), { recursive: true });
  await Deno.writeTextFile(join(dir, "index.txt"), "");
  await Deno.writeTextFile(join(dir, "serial"), toHex(randomBytes(8)).replace(/^./, "1") + "\n");
  await Deno.writeTextFile(join(dir, "crlnumber"), "01\n");
  await Deno.writeTextFile(join(dir, "ca.cnf"), caConfig(dir, alg));
  const dates = options.notBefore && options.notAfter
    ? ["-startdate", options.notBefore, "-enddate", options.notAfter]
    : ["-days", "3650"];
  const issue = async (name: string, file: string, ext: string, selfsign: boolean) => {
    await openssl([
      "req",
      "-new",
      ...NEWKEY[alg],
      "-nodes",
      "-keyout",
      `${file}.key`,
      "-out",
      `${file}.csr`,
      "-subj",
      `/CN=${name}`,
    ], dir);
    await openssl([
      "ca",
      "-batch",
      "-notext",
      "-config",
      "ca.cnf",
      "-extensions",
      ext,
      ...(selfsign ? ["-selfsign", "-keyfile", `${file}.key`] : ["-cert", "ca.pem"]),
      ...(selfsign ? [] : ["-keyfile", "ca.key"]),
      "-in",
      `${file}.csr`,
      "-out",
      `${file}.pem`,
      ...dates,
    ], dir);
  };
  await issue(options.caName ?? "SecureChat Test CA", "ca", "ca_ext", true);
  await issue(options.clientName ?? "alice", "client", "client_ext", false);
  await issue("localhost", "server", "server_ext", false);
  for (const name of options.others ?? []) await issue(name, name, "client_ext", false);
  const party = async (name: string, file: string): Promise<Party> => {
    const certPem = await Deno.readTextFile(join(dir, `${file}.pem`));
    const pkcs8 = pemToDer(await Deno.readTextFile(join(dir, `${file}.key`)));
    return {
      name,
      certPath: join(dir, `${file}.pem`),
      keyPath: join(dir, `${file}.key`),
      certDer: pemToDer(certPem),
      pkcs8,
      signer: await importSigningKeyPkcs8(pkcs8),
    };
  };
  const caPem = await Deno.readTextFile(join(dir, "ca.pem"));
  return {
    dir,
    caPath: join(dir, "ca.pem"),
    caPem,
    caDer: pemToDer(caPem),
    client: await party(options.clientName ?? "alice", "client"),
    server: await party("localhost", "server"),
    others: await Promise.all((options.others ?? []).map((name) => party(name, name))),
  };
}

export interface SessionOptions {
  /** Directory of the recording side's transcript. */
  dir: string;
  /** Which side records (default client). */
  role?: "client" | "server";
  /** Message directions in arrival order, or a count (alternating c2s, s2c). */
  messages?: ("c2s" | "s2c")[] | number;
  sessionId?: string;
  startedAt?: number;
  /** The time between one line and the next (default 7 ms). */
  lineGapMs?: number;
  /** "both": own + peer receipt (the peer writes its own transcript in `<dir>/peer`); default. */
  receipts?: "both" | "own" | "none";
  /** Signatures made at once while generating (large transcripts). */
  batch?: number;
  /**
   * Every other s2c line relays records of this author (a client certificate of the
   * same CA); the others are server notices. Default: notices only.
   */
  relayAuthor?: Party;
  /**
   * How the author signs and the server groups (PROTOCOL §6.4): batches of `n` records, each
   * relay line carrying the next `perRelay` records of the current batch (fewer at its end).
   * Default `{ n: 1, perRelay: 1 }`: a record per batch and per relay.
   */
  relayGroups?: { n: number; perRelay: number };
  /**
   * How the client signs its own records and sends them (PROTOCOL §6.3): each batch the sizes of
   * the msg lines it leaves in, in order (`[3]`: a batch of 3 whole in one line; `[2, 1]`: a batch
   * of 3 in two lines, each with its proof), the list used in turn and again from its start.
   * Default: every c2s line a batch of one.
   */
  c2sGroups?: number[][];
}

export interface SessionResult {
  sessionId: string;
  logPath: string;
  receiptPath?: string;
  peerReceiptPath?: string;
  ownReceipt?: Receipt;
  peerReceipt?: Receipt;
  /** The other side's transcript when receipts = "both". */
  peerLogPath?: string;
  entries: number;
}

/**
 * The relay lines of `author` at the given hops, by hop seqno: its records signed in batches of
 * `groups.n` (one author session), each hop carrying the next `groups.perRelay` records of the
 * current batch with the proof made from their own paths (PROTOCOL §6.4); the author's
 * certificate introduced on the first (§6.4.1). Each line carries its records' content keys for
 * the `.keys` file.
 */
async function relayLines(
  author: Party,
  hops: readonly { seqno: number; ts: number }[],
  groups: { n: number; perRelay: number },
): Promise<Map<number, PreparedLine>> {
  const sid = toHex(randomBytes(16));
  const lines = new Map<number, PreparedLine>();
  let batch: { records: MessageRecord[]; keys: Uint8Array[] } | null = null;
  let taken = 0;
  let seqno = 0;
  for (const [h, hop] of hops.entries()) {
    if (!batch || taken === batch.records.length) {
      // The next batch, signed before the hop that carries its first records.
      const made = Array.from({ length: groups.n }, () => {
        const { k, ct, c } = sealContent({ kind: "text", text: `relayed ${seqno + 1}` });
        const record: MessageRecord = {
          sid,
          dir: "c2s",
          to: LOBBY,
          seqno: ++seqno,
          ts: hop.ts - 1,
          ct,
          c,
        };
        return { record, k };
      });
      batch = { records: made.map((m) => m.record), keys: made.map((m) => m.k) };
      await signBatch(author.signer, batch.records);
      taken = 0;
    }
    const records = batch.records.slice(taken, taken + groups.perRelay);
    const keys = batch.keys.slice(taken, taken + groups.perRelay);
    taken += records.length;
    lines.set(
      hop.seqno,
      relayLineOf({ authorDer: author.certDer, ...hop, introduce: h === 0, records, keys }),
    );
  }
  return lines;
}

/**
 * The client's msg lines at the given places, by first seqno: each line carrying `count`
 * consecutive records of the current batch (PROTOCOL §6.1, §6.3), a batch of `newBatch` records
 * signed at the line that starts it, every record dated that line's ts.
 */
async function ownLines(
  client: Party,
  sid: string,
  lines: readonly { seqno: number; ts: number; count: number; newBatch: number }[],
): Promise<Map<number, PreparedLine>> {
  const made = new Map<number, PreparedLine>();
  let batch: { records: MessageRecord[]; keys: Uint8Array[] } = { records: [], keys: [] };
  for (const line of lines) {
    if (line.newBatch > 0) {
      const sealed = Array.from({ length: line.newBatch }, (_, j) => {
        const seqno = line.seqno + j;
        const { k, ct, c } = sealContent({ kind: "text", text: `message c2s ${seqno}` });
        const record: MessageRecord = { sid, dir: "c2s", to: LOBBY, seqno, ts: line.ts, ct, c };
        return { record, k };
      });
      batch = { records: sealed.map((s) => s.record), keys: sealed.map((s) => s.k) };
      await signBatch(client.signer, batch.records);
    }
    const at = batch.records.findIndex((r) => r.seqno === line.seqno);
    made.set(
      line.seqno,
      msgLineOf(
        batch.records.slice(at, at + line.count),
        batch.keys.slice(at, at + line.count),
      ),
    );
  }
  return made;
}

/**
 * The transcript line of a relay (PROTOCOL §6.4, TRANSCRIPT §2.2) carrying `records` — signed
 * records of one batch of the author's, in seqno order — with the proof made from their own
 * paths, introducing the author's certificate or only naming it, and their content keys for the
 * `.keys` file; laid out by encodeLine and lineEncoding, as verify reads it back.
 */
export function relayLineOf(relay: {
  authorDer: Uint8Array;
  seqno: number;
  ts: number;
  introduce: boolean;
  records: readonly MessageRecord[];
  keys?: readonly (Uint8Array | undefined)[];
}): PreparedLine {
  const { records } = relay;
  const { sig, batch } = records[0];
  if (!sig || !batch) throw new Error("the records are not signed");
  const line: Line = {
    dir: "s2c",
    type: "relay",
    seqno: relay.seqno,
    ts: relay.ts,
    author_fp: fingerprintOf(relay.authorDer),
    ...(relay.introduce ? { cert: relay.authorDer } : {}),
    sig,
    first: records[0].seqno - batch.i,
    n: batch.n,
    proof: groupProof(
      records.map((r) => r.batch!.i),
      batch.n,
      records.map((r) => r.batch!.path),
    ),
    records: records.map(({ sig: _sig, batch: _batch, ...record }) => record),
  };
  const json = encodeLine(line);
  const encoding = lineEncoding(line);
  return {
    dir: "s2c",
    seqno: relay.seqno,
    ts: relay.ts,
    itemKeys: relay.keys,
    writeJson: (out) => out.text(json),
    writeEncoding: (out) => out.bytes(encoding),
  };
}

/**
 * The transcript line of a user's msg (PROTOCOL §6.3, TRANSCRIPT §2.2) carrying `records` — signed
 * records of one batch of the client's, consecutive, in seqno order — as the client sends it
 * (prepareUserMsg: the proof made from their own paths), with their content keys for the `.keys`
 * file.
 */
export function msgLineOf(
  records: readonly MessageRecord[],
  keys?: readonly (Uint8Array | undefined)[],
): PreparedLine {
  return prepareUserMsg(records.map((record, j) => ({ record, k: keys?.[j] ?? randomBytes(32) })))
    .line;
}

/** The JSON text of a user's msg line of `records` (signed, of one batch): for tamper cases. */
export function msgLineJson(records: readonly MessageRecord[]): string {
  const out = new ByteBuilder();
  msgLineOf(records).writeJson(out);
  return fromUtf8(out.done());
}

/**
 * A relay line's record `item` (from 1) made whole (its `sig` and derived path, TRANSCRIPT §6) on
 * a `stored` line of the same hop and author: what a relay relabelled as a delivery from the
 * offline queue would be (tests of the stored line's own rules).
 */
export function storedLineOf(relayLine: string, item = 1): Record<string, unknown> {
  const json = JSON.parse(relayLine);
  const parsed = LineShape.safeParse(json);
  if (!parsed.success) throw new Error("not a transcript line");
  const line = decodeLine(parsed.data);
  if (line.type !== "relay") throw new Error("not a relay line");
  const record = wholeRecordOfGroup(line.records, line, item - 1);
  if (!record) throw new Error("the relay's proof does not fit its records");
  return {
    dir: "s2c",
    type: "stored",
    seqno: json.seqno,
    ts: json.ts,
    author_fp: json.author_fp,
    ...(json.cert === undefined ? {} : { cert: json.cert }),
    record: encodeRecord(record),
  };
}

export function directions(n: number): ("c2s" | "s2c")[] {
  return Array.from({ length: n }, (_, i) => (i % 2 === 0 ? "c2s" : "s2c"));
}

/**
 * Writes a session as both sides would: the recording side's transcript (and, with
 * receipts "both", the peer's own transcript with a different arrival interleaving),
 * with real signed records (c2s: the client's texts; s2c: notices, or relays of
 * `relayAuthor`'s records). The client keeps its `.keys` file.
 */
export async function writeSession(pki: Pki, options: SessionOptions): Promise<SessionResult> {
  const role = options.role ?? "client";
  const dirs = typeof options.messages === "number"
    ? directions(options.messages)
    : options.messages ?? directions(6);
  const sessionId = options.sessionId ?? toHex(randomBytes(16));
  const startedAt = options.startedAt ?? Date.now();
  const receipts = options.receipts ?? "both";
  const header = {
    sessionId,
    clientCertDer: pki.client.certDer,
    serverCertDer: pki.server.certDer,
    sessionTime: startedAt,
    startedAt,
  };
  const own = await TranscriptWriter.create(transcriptDirectory(options.dir), {
    ...header,
    role,
    keepKeys: role === "client",
  });
  const peerRole = role === "client" ? "server" : "client";
  const peer = receipts === "both"
    ? await TranscriptWriter.create(transcriptDirectory(join(options.dir, "peer")), {
      ...header,
      role: peerRole,
      startedAt: startedAt + 3,
      keepKeys: peerRole === "client",
    })
    : null;

  const seq = { c2s: 0, s2c: 0 };
  const gap = options.lineGapMs ?? 7;
  const groups = options.c2sGroups ?? [[1]];
  /** The lines of the client's batches, in order: how many records each, and the batch's size. */
  const c2sLines = function* () {
    for (let b = 0;; b = (b + 1) % groups.length) {
      const n = groups[b].reduce((a, m) => a + m, 0);
      for (const [j, count] of groups[b].entries()) yield { count, n: j === 0 ? n : 0 };
    }
  }();
  const plan = dirs.map((dir, i) => {
    const ts = startedAt + 10 + i * gap;
    if (dir === "s2c") return { dir, seqno: ++seq.s2c, ts, count: 1, newBatch: 0 };
    // A c2s line: the next records of the client's batch (`newBatch` its size where one starts).
    const { count, n } = c2sLines.next().value!;
    const seqno = seq.c2s + 1;
    seq.c2s += count;
    return { dir, seqno, ts, count, newBatch: n };
  });
  const batch = options.batch ?? 256;
  const peerLater: PreparedLine[] = [];
  const relays = options.relayAuthor
    ? await relayLines(
      options.relayAuthor,
      plan.filter((p) => p.dir === "s2c" && p.seqno % 2 === 0),
      options.relayGroups ?? { n: 1, perRelay: 1 },
    )
    : new Map<number, PreparedLine>();
  const grouped = options.c2sGroups
    ? await ownLines(pki.client, sessionId, plan.filter((p) => p.dir === "c2s"))
    : new Map<number, PreparedLine>();
  for (let i = 0; i < plan.length; i += batch) {
    const lines = await Promise.all(
      plan.slice(i, i + batch).map(async (p): Promise<PreparedLine> => {
        const text = `message ${p.dir} ${p.seqno}`;
        if (p.dir === "c2s") {
          const line = grouped.get(p.seqno);
          if (line) return line;
          const { k, ct, c } = sealContent({ kind: "text", text });
          const record: MessageRecord = {
            sid: sessionId,
            dir: "c2s",
            to: LOBBY,
            seqno: p.seqno,
            ts: p.ts,
            ct,
            c,
          };
          await signBatch(pki.client.signer, [record]);
          return msgLineOf([record], [k]);
        }
        const relay = relays.get(p.seqno);
        if (relay) return relay;
        const { k, ct, c } = sealContent({ kind: "notice", text });
        const to = userRecipient(pki.client.name);
        const record = { sid: sessionId, dir: "s2c" as const, to, seqno: p.seqno, ts: p.ts, ct, c };
        return prepareMsg(record, k).line;
      }),
    );
    for (const line of lines) {
      own.append(line);
      if (!peer) continue;
      // The peer sees a different interleaving: it holds back the s2c lines
      // until the next c2s line (per-direction order stays the same).
      if (line.dir === "s2c") peerLater.push(line);
      else {
        peer.append(line);
        for (const held of peerLater.splice(0)) peer.append(held);
      }
    }
  }
  for (const held of peerLater.splice(0)) peer?.append(held);

  const result: SessionResult = { sessionId, logPath: own.path, entries: plan.length };
  if (receipts === "none") {
    await own.abort();
    return result;
  }
  const mine = await own.createReceipt(role === "client" ? pki.client.signer : pki.server.signer);
  if (!peer) {
    const done = await own.finish(mine);
    return { ...result, receiptPath: done.receiptPath, ownReceipt: mine };
  }
  const theirs = await peer.createReceipt(
    peerRole === "client" ? pki.client.signer : pki.server.signer,
  );
  const peerCert = peerRole === "client" ? pki.client.certDer : pki.server.certDer;
  const ownCert = role === "client" ? pki.client.certDer : pki.server.certDer;
  const acceptedTheirs = await own.acceptPeerReceipt(structuredClone(theirs), peerCert);
  const acceptedMine = await peer.acceptPeerReceipt(structuredClone(mine), ownCert);
  const done = await own.finish(mine, acceptedTheirs);
  await peer.finish(theirs, acceptedMine);
  return {
    ...result,
    receiptPath: done.receiptPath,
    peerReceiptPath: done.peerReceiptPath,
    ownReceipt: mine,
    peerReceipt: acceptedTheirs,
    peerLogPath: peer.path,
  };
}

// ---------------------------------------------------------------------------
// Tamper cases, shared by the library and CLI tests.

export interface TamperBase {
  pki: Pki;
  /** A valid 8-message session recorded by the client, with both receipts. */
  session: SessionResult;
  /** Its log lines (without newlines): 1 header, then c2s1 s2c1 c2s2 s2c2 ... s2c4. */
  lines: string[];
  /** Own receipt text of `session`. */
  receipt: string;
  /** Another session between the same parties (same CA), with its receipt. */
  other: SessionResult;
  /** A session under a different CA with the same names. */
  foreign: SessionResult;
  /** A key that belongs to nobody in the session. */
  attacker: SigningKey;
  attackerCertDer: Uint8Array;
}

export interface TamperCase {
  name: string;
  code: "TAMPERED" | "SIG_FAIL" | "BAD_CERT" | "REPLAY";
  /** First bad line, or null when the problem is in the receipt. */
  line: number | null;
  reason: RegExp;
  /** Log lines (no newlines) and the receipt to place beside the log (autodetected). */
  make(base: TamperBase): Promise<{ lines: string[]; receipt?: string; torn?: boolean }>;
}

/** Builds the shared material for the tamper table. */
export async function makeTamperBase(): Promise<TamperBase> {
  const pki = await makePki({ alg: "ed25519" });
  const foreignPki = await makePki({ alg: "ed25519", caName: "SecureChat Test CA" });
  const work = await Deno.makeTempDir({ prefix: "sc-tamper-" });
  const session = await writeSession(pki, { dir: join(work, "a"), messages: 8 });
  const other = await writeSession(pki, { dir: join(work, "b"), messages: 8 });
  const foreign = await writeSession(foreignPki, { dir: join(work, "c"), messages: 8 });
  const text = await Deno.readTextFile(session.logPath);
  return {
    pki,
    session,
    lines: text.split("\n").slice(0, -1),
    receipt: await Deno.readTextFile(session.receiptPath!),
    other,
    foreign,
    attacker: foreignPki.client.signer,
    attackerCertDer: foreignPki.client.certDer,
  };
}

type Json = Record<string, unknown>;
const edit = (line: string, f: (o: Json) => void): string => {
  const o = JSON.parse(line) as Json;
  f(o);
  return JSON.stringify(o);
};
/** The record of an s2c msg line, or the first of a group line. */
const recordOf = (line: string): Json => {
  const o = JSON.parse(line) as Json;
  return (o.record ?? (o.records as { record: Json }[])[0].record) as Json;
};
/** Replaces the base64 character at `i` by another valid one (canonical form kept). */
const flipB64 = (s: string, i: number) =>
  s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);

/** Edits the record of an s2c msg line, or the first record of a group line (a c2s msg, a relay). */
const editRecord = (line: string, f: (r: Json) => void): string =>
  edit(line, (o) => f((o.record ?? (o.records as { record: Json }[])[0].record) as Json));

export const TAMPER_CASES: TamperCase[] = [
  {
    name: "one changed character in a ciphertext",
    code: "SIG_FAIL",
    line: 4,
    reason: /c2s seqno 2: the client's signature does not verify/,
    make: (b) => {
      const lines = [...b.lines];
      lines[3] = editRecord(lines[3], (r) => (r.ct = flipB64(r.ct as string, 3)));
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "one changed character in a signature",
    code: "SIG_FAIL",
    line: 6,
    reason: /c2s seqno 3: the client's signature does not verify/,
    make: (b) => {
      const lines = [...b.lines];
      lines[5] = edit(lines[5], (o) => (o.sig = flipB64(o.sig as string, 10)));
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "one changed character in a commitment",
    code: "SIG_FAIL",
    line: 6,
    reason: /c2s seqno 3: the client's signature does not verify/,
    make: (b) => {
      const lines = [...b.lines];
      lines[5] = editRecord(lines[5], (r) => (r.c = flipB64(r.c as string, 4)));
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "one changed character in a seqno",
    code: "TAMPERED",
    line: 6,
    reason: /c2s seqno 5, expected 3/,
    make: (b) => {
      const lines = [...b.lines];
      // The record's seqno and the line's `first` with it (the group's schema holds).
      lines[5] = lines[5].replace('"seqno":3,', '"seqno":5,').replace('"first":3,', '"first":5,');
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "one changed character in a timestamp",
    code: "SIG_FAIL",
    line: 6,
    reason: /c2s seqno 3: the client's signature does not verify/,
    make: (b) => {
      const lines = [...b.lines];
      lines[5] = lines[5].replace(
        /"ts":(\d+)(\d),/,
        (_, a, d) => `"ts":${a}${(Number(d) + 1) % 10},`,
      );
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "a timestamp moved before the previous one",
    code: "TAMPERED",
    line: 6,
    reason: /c2s ts \d+ is before the previous c2s ts/,
    make: (b) => {
      const lines = [...b.lines];
      const earlier = recordOf(lines[3]).ts as number;
      lines[5] = editRecord(lines[5], (r) => (r.ts = earlier - 1));
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "a deleted line",
    code: "TAMPERED",
    line: 5,
    reason: /c2s seqno 3, expected 2/,
    make: (b) => {
      const lines = [...b.lines];
      lines.splice(3, 1);
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "two lines swapped",
    code: "TAMPERED",
    line: 4,
    reason: /c2s seqno 3, expected 2/,
    make: (b) => {
      const lines = [...b.lines];
      [lines[3], lines[5]] = [lines[5], lines[3]];
      return Promise.resolve({ lines, receipt: b.receipt });
    },
  },
  {
    name: "an appended forged line",
    code: "SIG_FAIL",
    line: 10,
    reason: /c2s seqno 5: the client's signature does not verify/,
    make: async (b) => {
      const last = recordOf(b.lines[8]);
      const { ct, c } = sealContent({ kind: "text", text: "forged" });
      const record: MessageRecord = {
        sid: b.session.sessionId,
        dir: "c2s",
        to: LOBBY,
        seqno: 5,
        ts: (last.ts as number) + 1000,
        ct,
        c,
      };
      await signBatch(b.attacker, [record]);
      return { lines: [...b.lines, msgLineJson([record])], receipt: b.receipt };
    },
  },
  {
    name: "a c2s line moved in from another session between the same parties",
    code: "TAMPERED",
    line: 2,
    reason: /record of session [0-9a-f]{32}, not [0-9a-f]{32} \(moved from another session\)/,
    make: async (b) => {
      const lines = [...b.lines];
      lines[1] = (await Deno.readTextFile(b.other.logPath)).split("\n")[1];
      return { lines };
    },
  },
  {
    name: "a c2s record relabelled as the other direction",
    code: "TAMPERED",
    line: 2,
    reason: /a s2c record on a c2s line/,
    make: (b) => {
      const lines = [...b.lines];
      lines[1] = editRecord(lines[1], (r) => (r.dir = "s2c"));
      return Promise.resolve({ lines });
    },
  },
  {
    name: "a c2s record readdressed to another recipient",
    code: "SIG_FAIL",
    line: 2,
    reason: /c2s seqno 1: the client's signature does not verify/,
    make: (b) => {
      const lines = [...b.lines];
      lines[1] = editRecord(lines[1], (r) => (r.to = "user:carol"));
      return Promise.resolve({ lines });
    },
  },
  {
    name: "a deleted final line (only the receipt can tell)",
    code: "TAMPERED",
    line: null,
    reason:
      /receipt covers c2s 1\.\.4 and s2c 1\.\.4, the transcript has only c2s 1\.\.4 and s2c 1\.\.3/,
    make: (b) => Promise.resolve({ lines: b.lines.slice(0, -1), receipt: b.receipt }),
  },
  {
    name: "a receipt for another transcript",
    code: "TAMPERED",
    line: null,
    reason: /receipt is for session [0-9a-f]{32}, not/,
    make: async (b) => ({ lines: b.lines, receipt: await Deno.readTextFile(b.other.receiptPath!) }),
  },
  {
    name: "a receipt for another transcript, relabelled with this session_id",
    code: "TAMPERED",
    line: null,
    reason: /does not match the recomputed/,
    make: async (b) => {
      const r = JSON.parse(await Deno.readTextFile(b.other.receiptPath!)) as Json;
      r.session_id = b.session.sessionId;
      return { lines: b.lines, receipt: JSON.stringify(r) };
    },
  },
  {
    name: "a receipt whose signature was altered",
    code: "SIG_FAIL",
    line: null,
    reason: /receipt signature does not verify with the client's certificate/,
    make: (b) => {
      const r = JSON.parse(b.receipt) as Json;
      r.sig = flipB64(r.sig as string, 5);
      return Promise.resolve({ lines: b.lines, receipt: JSON.stringify(r) });
    },
  },
  {
    name: "the client's receipt relabelled as the server's",
    code: "TAMPERED",
    line: null,
    reason: /is the client's certificate, but says signer_role "server"/,
    make: (b) => {
      const r = JSON.parse(b.receipt) as Json;
      r.signer_role = "server";
      return Promise.resolve({ lines: b.lines, receipt: JSON.stringify(r) });
    },
  },
  {
    name: "a receipt signed by someone who is not a party",
    code: "TAMPERED",
    line: null,
    reason: /not one of the two parties/,
    make: async (b) => {
      const r = JSON.parse(b.receipt) as Json;
      r.signer = fingerprintOf(b.attackerCertDer);
      const signed = receiptSignedData("client", fromHex(r.transcript_sha256 as string));
      r.sig = toBase64(await sign(b.attacker, signed));
      return { lines: b.lines, receipt: JSON.stringify(r) };
    },
  },
  {
    name: "a receipt with a duplicate member",
    code: "TAMPERED",
    line: null,
    reason: /appears twice/,
    make: (b) =>
      Promise.resolve({
        lines: b.lines,
        receipt: b.receipt.trimEnd().replace(/}$/, ',"c2s_count":0}'),
      }),
  },
  {
    name: "a transcript signed by a certificate from another CA",
    code: "BAD_CERT",
    line: 1,
    reason: /client certificate/,
    make: async (b) => ({
      lines: (await Deno.readTextFile(b.foreign.logPath)).split("\n").slice(0, -1),
    }),
  },
  {
    name: "a truncated last line",
    code: "TAMPERED",
    line: 9,
    reason: /truncated final line/,
    make: (b) => {
      const lines = [...b.lines];
      lines[8] = lines[8].slice(0, Math.floor(lines[8].length / 2));
      return Promise.resolve({ lines, receipt: b.receipt, torn: true });
    },
  },
  {
    name: "an unknown field in a line",
    code: "TAMPERED",
    line: 3,
    reason: /malformed/,
    make: (b) => {
      const lines = [...b.lines];
      lines[2] = edit(lines[2], (o) => (o.author = "mallory"));
      return Promise.resolve({ lines });
    },
  },
  {
    // issue 11 item 13: two tools must not read two different values from one line
    name: "a duplicate member in a line (a second ct)",
    code: "TAMPERED",
    line: 4,
    reason: /member "ct" appears twice/,
    make: (b) => {
      const lines = [...b.lines];
      lines[3] = lines[3].replace('"ct":', '"ct":"AAAA","ct":');
      return Promise.resolve({ lines });
    },
  },
  {
    name: "a duplicate member in the header (a second session_time)",
    code: "TAMPERED",
    line: 1,
    reason: /member "session_time" appears twice/,
    make: (b) => {
      const lines = [...b.lines];
      lines[0] = lines[0].replace('"session_time":', '"session_time":0,"session_time":');
      return Promise.resolve({ lines });
    },
  },
  {
    name: "an inserted empty line",
    code: "TAMPERED",
    line: 4,
    reason: /not strict UTF-8 JSON/,
    make: (b) => {
      const lines = [...b.lines];
      lines.splice(3, 0, "");
      return Promise.resolve({ lines });
    },
  },
  {
    name: "certificates swapped in the header",
    code: "BAD_CERT",
    line: 1,
    reason: /client certificate/,
    make: (b) => {
      const lines = [...b.lines];
      lines[0] = edit(lines[0], (o) => {
        [o.client_cert, o.server_cert] = [o.server_cert, o.client_cert];
      });
      return Promise.resolve({ lines });
    },
  },
];

/**
 * Revokes `party` with openssl (revocationDate: now) and returns the CRL (PEM) the CA
 * signs right after, with a cRLNumber and a nextUpdate as RFC 5280 wants.
 */
export async function revoke(pki: Pki, party: Party): Promise<string> {
  const ca = ["-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key"];
  await openssl(["ca", ...ca, "-revoke", party.certPath], pki.dir);
  await openssl(["ca", ...ca, "-gencrl", "-crldays", "30", "-out", "ca.crl"], pki.dir);
  return await Deno.readTextFile(join(pki.dir, "ca.crl"));
}

/** Writes a case as `<dir>/case.log` (+ `case.receipt.json`); returns the log path. */
export async function writeCase(
  dir: string,
  made: { lines: string[]; receipt?: string; torn?: boolean },
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const logPath = join(dir, "case.log");
  await Deno.writeTextFile(logPath, made.lines.join("\n") + (made.torn ? "" : "\n"));
  if (made.receipt !== undefined) {
    await Deno.writeTextFile(join(dir, "case.receipt.json"), made.receipt);
  }
  return logPath;
}
