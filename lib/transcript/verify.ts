/**
 * Offline verification of a transcript and its receipts with only the CA
 * (docs/TRANSCRIPT.md §5). Streams the log line by line, checks each line in file
 * order and verifies signatures with bounded concurrency; reports the FIRST bad
 * line by line number, whatever order the asynchronous checks finish in.
 */
import { basename } from "node:path";
import { fromUtf8 } from "../bytes.ts";
import { codeOf, type ErrorCode, SecureChatError } from "../errors.ts";
import type { VerifyingKey } from "../crypto/signature.ts";
import {
  decodeLine,
  isClientRecipient,
  type Line,
  LineShape,
  LOBBY,
  MAX_STORED_AGE_MS,
  type MessageRecord,
  prepareLine,
  RecordSignatures,
  userRecipient,
} from "../message/record.ts";
import type { TrustStore, ValidatedPeer } from "../pki/validate.ts";
import { parseStrictJson } from "../wire/strict_json.ts";
import { ownServerName, TrustAtSessionTime } from "./trust_at.ts";
import {
  basePathOfLog,
  type Direction,
  type HashState,
  type HeaderLine,
  HeaderLineSchema,
  MAX_LINE_BYTES,
  type Role,
  TranscriptHasher,
  unsupportedFormat,
} from "./format.ts";
import { fingerprintOf } from "../pki/describe.ts";
import { readLines } from "./lines.ts";
import { SessionCertList } from "../message/author_certs.ts";
import { type C2sAnswer, C2sAnswers } from "../message/answers.ts";
import { checkReceipt, parseReceipt, type Receipt, type ReceiptParties } from "./receipt.ts";

export type VerifyCode = Extract<
  ErrorCode,
  "TAMPERED" | "SIG_FAIL" | "BAD_CERT" | "REPLAY" | "STALE" | "UNSUPPORTED_FORMAT"
>;

/** The clock skew verify allows, as the protocol does (PROTOCOL §8.2). */
export const VERIFY_SKEW_MS = 5 * 60 * 1000;

export interface PartyReport {
  role: Role;
  commonName: string;
  /** hex SHA-256 of the certificate DER */
  fingerprint: string;
  serial: string;
  notAfter: string;
  /** ISO time from which the CRL distrusts it, when it is on the CRL (after the session). */
  revokedFrom?: string;
}

export interface ReceiptReport {
  path: string;
  /** true if found beside the log rather than named by the caller */
  autodetected: boolean;
  status: "valid" | "invalid" | "not-checked";
  /** the party that signed it */
  signer?: Role;
  signerCommonName?: string;
  signerFingerprint?: string;
  /** the lines it confirms: c2s 1..c2sCount, s2c 1..s2cCount */
  c2sCount?: number;
  s2cCount?: number;
  /** true when it covers every line of the transcript */
  complete?: boolean;
  code?: VerifyCode;
  reason?: string;
}

export interface VerifyReport {
  /** Every complete line is valid, there is no torn line, and every receipt checked is valid. */
  ok: boolean;
  code: VerifyCode | null;
  /** 1-based line number of the first bad line; null if the problem is in a receipt. */
  firstBadLine: number | null;
  reason: string | null;
  path: string;
  transcriptVersion: number | null;
  protocolVersion: number | null;
  sessionId: string | null;
  /** who wrote this file */
  recordedBy: Role | null;
  /** server_hello.time: certificates are judged at it; signed only through the receipts */
  sessionTime: number | null;
  startedAt: number | null;
  /**
   * the seqnos of the lines that passed every check, per direction (TRANSCRIPT §2.2: a user's msg
   * line takes one per record, every other line one): the counts a receipt names
   */
  messages: { c2s: number; s2c: number };
  signers: { client?: PartyReport; server?: PartyReport };
  /**
   * Authors of signed records whose signatures verified and who were not revoked by then, with
   * the number of such records (a relay line of several counts each).
   */
  authors: { commonName: string; fingerprint: string; messages: number }[];
  /**
   * Signed records whose author's certificate was revoked before they were signed: by line, and
   * for a relay line by the record's place in it from 1 (`item`, TRANSCRIPT §6's `N:J`).
   */
  unattributed: { line: number; item?: number; commonName: string; reason: string }[];
  /** c2s messages the server refused (PROTOCOL §6.5). */
  refused: { of: number; code: string; line: number }[];
  /** c2s messages the server stored for an offline recipient (PROTOCOL §6.6). */
  queued: { of: number; line: number }[];
  /** Lines delivered from the offline queue: when their author wrote them (PROTOCOL §6.6). */
  stored: { line: number; writtenAt: number }[];
  /** first and last message ts (ms) among the lines that passed */
  span: { first: number | null; last: number | null };
  /** the recomputed transcript hash (hex), when every line is valid */
  transcriptSha256: string | null;
  receipts: ReceiptReport[];
  /** the parties whose valid receipts cover every line */
  confirmedBy: Role[];
  /** the CRL applied: revocations after its thisUpdate are unknown */
  crl: { thisUpdate: string; nextUpdate: string | null; stale: boolean } | null;
  /** the transcript holds ciphertext only: nothing here reveals the plaintext */
  ciphertextOnly: true;
}

export interface VerifyOptions {
  trust: TrustStore;
  /** A receipt to check (own or peer's). */
  receiptPath?: string;
  /** More receipts to check. */
  receiptPaths?: string[];
  /**
   * With no receipt named, also use `<base>.receipt.json` and `<base>.peer-receipt.json`
   * beside the log if they exist. Default true.
   */
  autodetectReceipts?: boolean;
  /** Signature verifications in flight at once. Default 32. */
  concurrency?: number;
  /** "Now", for telling a stale CRL; tests pass theirs. */
  now?: Date;
}

interface Problem {
  line: number;
  code: VerifyCode;
  reason: string;
}

interface Party {
  fingerprint: string;
  key: VerifyingKey;
  peer: ValidatedPeer;
  revokedFrom: Date | null;
}

function emptyReport(path: string): VerifyReport {
  return {
    ok: false,
    code: null,
    firstBadLine: null,
    reason: null,
    path,
    transcriptVersion: null,
    protocolVersion: null,
    sessionId: null,
    recordedBy: null,
    sessionTime: null,
    startedAt: null,
    messages: { c2s: 0, s2c: 0 },
    signers: {},
    authors: [],
    unattributed: [],
    refused: [],
    queued: [],
    stored: [],
    span: { first: null, last: null },
    transcriptSha256: null,
    receipts: [],
    confirmedBy: [],
    crl: null,
    ciphertextOnly: true,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** A receipt file read ahead of the lines, so the hash can be snapshot at its counts. */
interface ReceiptInput {
  entry: ReceiptReport;
  receipt?: Receipt;
}

async function readReceipt(path: string, autodetected: boolean): Promise<ReceiptInput> {
  const entry: ReceiptReport = { path, autodetected, status: "invalid" };
  let text: string;
  try {
    const stat = await Deno.stat(path);
    if (stat.size > 64 * 1024) {
      return { entry: { ...entry, code: "TAMPERED", reason: "receipt file too large" } };
    }
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read receipt ${path}`, { cause });
  }
  try {
    const receipt = parseReceipt(text);
    entry.signer = receipt.signer_role;
    entry.signerFingerprint = receipt.signer;
    entry.c2sCount = receipt.c2s_count;
    entry.s2cCount = receipt.s2c_count;
    return { entry, receipt };
  } catch (cause) {
    entry.code = "TAMPERED";
    entry.reason = cause instanceof Error ? cause.message : String(cause);
    return { entry };
  }
}

/**
 * Verifies a transcript (and receipts) with only the CA.
 * @returns a report; `ok` false names the first problem (code, line, reason)
 * @throws IO_ERROR if the log or a named receipt cannot be read
 */
export async function verifyTranscript(
  logPath: string,
  opts: VerifyOptions,
): Promise<VerifyReport> {
  const report = emptyReport(logPath);
  const named = [
    ...(opts.receiptPath ? [opts.receiptPath] : []),
    ...(opts.receiptPaths ?? []),
  ].map((path) => ({ path, autodetected: false }));
  for (const { path } of named) {
    if (!await exists(path)) throw new SecureChatError("IO_ERROR", `cannot read receipt ${path}`);
  }
  const receiptFiles = [...named];
  if (named.length === 0 && opts.autodetectReceipts !== false) {
    const base = basePathOfLog(logPath);
    for (const path of [`${base}.receipt.json`, `${base}.peer-receipt.json`]) {
      if (path !== logPath && await exists(path)) receiptFiles.push({ path, autodetected: true });
    }
  }
  const receipts = await Promise.all(receiptFiles.map((r) => readReceipt(r.path, r.autodetected)));

  let file: Deno.FsFile;
  try {
    file = await Deno.open(logPath, { read: true });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read transcript ${logPath}`, { cause });
  }
  let result: Awaited<ReturnType<typeof checkLines>>;
  try {
    result = await checkLines(file, report, opts, receipts);
  } catch (cause) {
    if (cause instanceof SecureChatError) throw cause;
    throw new SecureChatError("IO_ERROR", `cannot read transcript ${logPath}`, { cause });
  } finally {
    try {
      file.close();
    } catch { /* closed */ }
  }

  const { problem, hashAt, latestTsAt, parties, counts } = result;
  if (problem) {
    report.code = problem.code;
    report.firstBadLine = problem.line;
    report.reason = problem.reason;
    report.receipts = receipts.map((r) => ({ ...r.entry, status: "not-checked" as const }));
    return report;
  }
  report.transcriptSha256 = hashAt!(counts.c2s, counts.s2c)!.transcriptSha256;

  const receiptParties: ReceiptParties = {
    client: {
      fingerprint: parties!.client.fingerprint,
      key: () => Promise.resolve(parties!.client.key),
    },
    server: {
      fingerprint: parties!.server.fingerprint,
      key: () => Promise.resolve(parties!.server.key),
    },
  };
  for (const { entry, receipt } of receipts) {
    report.receipts.push(entry);
    if (!receipt) continue;
    entry.signerCommonName = report.signers[receipt.signer_role]?.commonName;
    try {
      await checkReceipt(receipt, {
        sessionId: report.sessionId!,
        counts,
        stateAt: hashAt!,
        parties: receiptParties,
      });
      checkSignedInTime(
        receipt.signer_role,
        parties![receipt.signer_role].peer.notAfter,
        opts.trust.ca.notAfter,
        latestTsAt!(receipt.c2s_count, receipt.s2c_count),
      );
      entry.status = "valid";
      entry.complete = receipt.c2s_count === counts.c2s && receipt.s2c_count === counts.s2c;
    } catch (cause) {
      const code = cause instanceof SecureChatError ? cause.code : "INTERNAL";
      entry.code = code === "SIG_FAIL" || code === "BAD_CERT" ? code : "TAMPERED";
      entry.reason = cause instanceof Error ? cause.message : String(cause);
    }
  }
  const bad = report.receipts.find((r) => r.status === "invalid");
  if (bad) {
    report.code = bad.code!;
    report.reason = `receipt ${basename(bad.path)}: ${bad.reason}`;
    return report;
  }
  const confirmed = new Set(
    report.receipts.filter((r) => r.status === "valid" && r.complete).map((r) => r.signer!),
  );
  report.confirmedBy = (["client", "server"] as const).filter((role) => confirmed.has(role));
  report.ok = true;
  return report;
}

/**
 * TRANSCRIPT §4.2 step 7: a receipt is signed after every line it covers, so one covering a
 * line dated (less the skew) after its signer's certificate or the CA expired was signed with
 * a lapsed certificate. A server closes its sessions before that (PROTOCOL §5.2).
 * @throws BAD_CERT
 */
function checkSignedInTime(role: Role, notAfter: Date, caNotAfter: Date, latestTs: number): void {
  const until = Math.min(notAfter.getTime(), caNotAfter.getTime());
  if (latestTs - VERIFY_SKEW_MS > until) {
    throw new SecureChatError(
      "BAD_CERT",
      `the ${role}'s receipt covers a line dated ${new Date(latestTs).toISOString()}, more than ` +
        `the allowed skew after its certificate (or the CA's) expired at ` +
        `${new Date(until).toISOString()}: it was signed with a lapsed certificate`,
    );
  }
}

type Fail = {
  problem: Problem;
  hashAt: null;
  latestTsAt: null;
  parties: null;
  counts: { c2s: 0; s2c: 0 };
};

async function checkLines(
  file: Deno.FsFile,
  report: VerifyReport,
  opts: VerifyOptions,
  receipts: ReceiptInput[],
): Promise<
  {
    problem: Problem | null;
    hashAt: ((c2s: number, s2c: number) => HashState | null) | null;
    /** The latest line ts among c2s 1..c2s and s2c 1..s2c (counts a receipt names). */
    latestTsAt: ((c2s: number, s2c: number) => number) | null;
    parties: Record<Role, Party> | null;
    counts: { c2s: number; s2c: number };
  }
> {
  const lines = readLines(file, MAX_LINE_BYTES);
  const first = await lines.next();
  const fail = (line: number, code: VerifyCode, reason: string): Fail => ({
    problem: { line, code, reason },
    hashAt: null,
    latestTsAt: null,
    parties: null,
    counts: { c2s: 0, s2c: 0 },
  });
  if (first.done) return fail(1, "TAMPERED", "empty file: no transcript header");
  const headerRaw = first.value;
  if (!headerRaw.complete) {
    return fail(1, "TAMPERED", "truncated header line (no newline; a torn write)");
  }
  if (headerRaw.overlong) return fail(1, "TAMPERED", "header line too long");

  // ---- header ----
  let headerValue: unknown;
  try {
    headerValue = parseStrictJson(fromUtf8(headerRaw.bytes));
  } catch (cause) {
    return fail(1, "TAMPERED", `header is not strict UTF-8 JSON: ${(cause as Error).message}`);
  }
  if ((headerValue as { type?: unknown } | null)?.type === "securechat-transcript") {
    const other = unsupportedFormat("transcript", (headerValue as { version?: unknown }).version);
    if (other) return fail(1, "UNSUPPORTED_FORMAT", other.message);
  }
  const parsedHeader = HeaderLineSchema.safeParse(headerValue);
  if (!parsedHeader.success) {
    return fail(1, "TAMPERED", `malformed header: ${schemaReason(parsedHeader.error)}`);
  }
  const header: HeaderLine = parsedHeader.data;
  report.transcriptVersion = header.version;
  report.protocolVersion = header.protocol_version;
  report.sessionId = header.session_id;
  report.recordedBy = header.role;
  report.sessionTime = header.session_time;
  report.startedAt = header.started_at;

  // Certificates are judged at the session time (hashed, so signed by the receipts),
  // not now, so a transcript stays verifiable after its certificates expire; revocation
  // by date against it (docs/TRANSCRIPT.md §5 steps 2–3).
  const at = new Date(header.session_time);
  const trustAt = new TrustAtSessionTime(opts.trust);
  const crl = trustAt.crlDates();
  if (crl) {
    const now = opts.now ?? new Date();
    report.crl = {
      thisUpdate: crl.thisUpdate.toISOString(),
      nextUpdate: crl.nextUpdate?.toISOString() ?? null,
      stale: crl.nextUpdate !== null && now > crl.nextUpdate,
    };
  }
  const parties = {} as Record<Role, Party>;
  for (const role of ["client", "server"] as const) {
    const der = role === "client" ? header.client_cert : header.server_cert;
    try {
      const expectedName = role === "server" ? header.server_name ?? ownServerName(der) : undefined;
      const peer = await trustAt.validate(der, { role, now: at, expectedName });
      const revokedFrom = trustAt.revokedFrom(peer);
      if (revokedFrom && revokedFrom <= at) {
        throw new SecureChatError(
          "BAD_CERT",
          `revoked from ${revokedFrom.toISOString()}, before the session`,
        );
      }
      const fingerprint = fingerprintOf(der);
      parties[role] = { fingerprint, key: peer.key, peer, revokedFrom };
      report.signers[role] = {
        role,
        commonName: peer.commonName,
        fingerprint,
        serial: peer.serial,
        notAfter: peer.notAfter.toISOString(),
        ...(revokedFrom ? { revokedFrom: revokedFrom.toISOString() } : {}),
      };
    } catch (cause) {
      const message = cause instanceof Error ? cause.message : String(cause);
      return fail(
        1,
        "BAD_CERT",
        `${role} certificate (judged at the session time ${at.toISOString()}): ${message}`,
      );
    }
  }

  // ---- messages ----
  const hasher = new TranscriptHasher({
    protocolVersion: header.protocol_version,
    sessionId: header.session_id,
    sessionTime: header.session_time,
    clientFingerprint: parties.client.fingerprint,
    serverFingerprint: parties.server.fingerprint,
  });
  // Digests at the counts receipts name, so a receipt over a prefix can be checked.
  const wanted: Record<Direction, Set<number>> = { c2s: new Set(), s2c: new Set() };
  for (const { receipt } of receipts) {
    if (receipt) {
      wanted.c2s.add(receipt.c2s_count);
      wanted.s2c.add(receipt.s2c_count);
    }
  }
  const digests: Record<Direction, Map<number, Uint8Array>> = { c2s: new Map(), s2c: new Map() };
  // The latest ts at those counts: a receipt cannot have been signed before the lines it covers.
  const latest: Record<Direction, Map<number, number>> = { c2s: new Map(), s2c: new Map() };
  const lastTs: Record<Direction, number> = { c2s: 0, s2c: 0 };
  const snapshot = (dir: Direction) => {
    const n = hasher.counts[dir];
    if (wanted[dir].has(n)) {
      digests[dir].set(n, hasher.digest(dir));
      latest[dir].set(n, lastTs[dir]);
    }
  };
  snapshot("c2s");
  snapshot("s2c");

  const me = userRecipient(parties.client.peer.commonName);
  const nextSeq: Record<Direction, number> = { c2s: 1, s2c: 1 };
  const relaySeq = new Map<string, number>();
  const authorCerts = new Map<string, Promise<ValidatedPeer>>();
  /** Each batch's signature verified once (PROTOCOL §6.1); a path that does not fit, TAMPERED. */
  const signatures = new RecordSignatures("TAMPERED");
  /** The session's author certificate list, run over the file as the parties ran it (§2.2). */
  const sessionCerts = new SessionCertList<Uint8Array>();
  const authors = new Map<string, { commonName: string; fingerprint: string; messages: number }>();
  const refused: { of: number; code: string; line: number }[] = [];
  const queued: { of: number; line: number }[] = [];
  const stored: { line: number; writtenAt: number }[] = [];
  /** The c2s records and what the server said back about each (PROTOCOL §6.5), in file order. */
  const c2sAnswers = new C2sAnswers();
  const answers: { of: number; how: C2sAnswer; line: number }[] = [];

  const limit = Math.max(1, opts.concurrency ?? 32);
  let active = 0;
  let wake: (() => void) | null = null;
  const settled = () => {
    active--;
    const w = wake;
    wake = null;
    w?.();
  };
  const slot = () => new Promise<void>((resolve) => (wake = resolve));
  type Snapshot = { c2s: number; s2c: number; first: number | null; last: number | null };
  type Found = Problem & { before: Snapshot };
  const running: Snapshot = { c2s: 0, s2c: 0, first: null, last: null };
  let asyncProblem: Found | null = null;
  let lineProblem: Found | null = null;
  const stop = (line: number, reason: string, code: VerifyCode = "TAMPERED"): Found => ({
    line,
    code,
    reason,
    before: { ...running },
  });
  const recordAsync = (found: Found) => {
    if (!asyncProblem || found.line < asyncProblem.line) asyncProblem = found;
  };
  const attribute = (
    n: number,
    item: number | undefined,
    party: ValidatedPeer,
    fingerprint: string,
    revokedFrom: Date | null,
    record: MessageRecord,
  ) => {
    if (revokedFrom && revokedFrom.getTime() <= record.ts) {
      report.unattributed.push({
        line: n,
        ...(item === undefined ? {} : { item }),
        commonName: party.commonName,
        reason:
          `${party.commonName}'s certificate is distrusted from ${revokedFrom.toISOString()}, ` +
          `before this record was signed (${new Date(record.ts).toISOString()})`,
      });
      return;
    }
    const count = authors.get(fingerprint) ??
      { commonName: party.commonName, fingerprint, messages: 0 };
    count.messages++;
    authors.set(fingerprint, count);
  };

  for await (const raw of lines) {
    if (asyncProblem) break;
    const n = raw.number;
    if (raw.overlong) {
      lineProblem = stop(n, "line too long");
      break;
    }
    if (!raw.complete) {
      lineProblem = stop(
        n,
        "truncated final line (no newline): a torn write, e.g. the writer was killed; " +
          "every line before it was checked",
      );
      break;
    }
    let value: unknown;
    let text: string;
    try {
      text = fromUtf8(raw.bytes);
      value = parseStrictJson(text);
    } catch (cause) {
      lineProblem = stop(n, `not strict UTF-8 JSON: ${(cause as Error).message}`);
      break;
    }
    const parsed = LineShape.safeParse(value);
    if (!parsed.success) {
      lineProblem = stop(n, `malformed: ${schemaReason(parsed.error)}`);
      break;
    }
    const line: Line = decodeLine(parsed.data);
    const prepared = prepareLine(line, text);
    const { dir, seqno } = prepared;
    /** The client's records on a user's msg line (TRANSCRIPT §2.2): a group of its batch. */
    const own = line.type === "msg" && line.dir === "c2s" ? line : null;
    /** Each seqno the line takes, with its ts (a user's msg: its records'; else the line's). */
    const taken = own ? own.records : [{ seqno, ts: prepared.ts }];
    const outOfOrder = checkSequence(dir, taken, nextSeq, lastTs);
    if (outOfOrder) {
      lineProblem = stop(n, outOfOrder.reason, outOfOrder.code);
      break;
    }
    let authorDer: Uint8Array | undefined;
    /** The user records the line forwards: a relay's group, a stored line's one. */
    const forwarded = line.type === "relay"
      ? line.records
      : line.type === "stored"
      ? [line.record]
      : [];
    if (line.type === "relay" || line.type === "stored") {
      try {
        authorDer = sessionCerts.admit(line.author_fp, line.cert, (der) => der);
      } catch (error) {
        lineProblem = stop(n, (error as Error).message);
        break;
      }
    }
    const problem = checkBinding(line, header, me) ??
      checkFreshness(line, forwarded, header, relaySeq);
    if (problem) {
      lineProblem = stop(n, problem.reason, problem.code);
      break;
    }
    if (line.type === "refused") refused.push({ of: line.of, code: line.code, line: n });
    if (line.type === "queued") queued.push({ of: line.of, line: n });
    if (line.type === "refused" || line.type === "queued") {
      answers.push({ of: line.of, how: line.type, line: n });
    }
    for (const record of own?.records ?? []) c2sAnswers.sent(record.seqno, record.to);
    // The client's own records relayed back to it (private lines to oneself) are answers too.
    for (const record of forwarded) {
      if (record.sid !== header.session_id) continue;
      answers.push({
        of: record.seqno,
        how: line.type === "stored" ? "stored" : "relayed",
        line: n,
      });
    }
    if (line.type === "stored") stored.push({ line: n, writtenAt: line.record.ts });
    const before = { ...running };
    const last = taken[taken.length - 1];
    nextSeq[dir] = last.seqno + 1;
    lastTs[dir] = last.ts;
    hasher.add(dir, prepared);
    snapshot(dir);
    running[dir] = last.seqno;
    running.first = running.first === null ? taken[0].ts : Math.min(running.first, taken[0].ts);
    running.last = running.last === null ? last.ts : Math.max(running.last, last.ts);

    if (own) {
      const client = parties.client;
      const seqnos = own.records.length > 1
        ? `c2s seqnos ${seqno}–${last.seqno}`
        : `c2s seqno ${seqno}`;
      active++;
      // Once for the line (TRANSCRIPT §5 step 4): the root from its records and proof, then sig;
      // in a promise, so a proof that does not fit (thrown at once) is found as a bad sig is.
      Promise.resolve().then(() => signatures.checkGroupNow(client, own.records, own, seqnos)).then(
        () =>
          own.records.forEach((record, j) =>
            attribute(n, j + 1, client.peer, client.fingerprint, client.revokedFrom, record)
          ),
        (error) =>
          recordAsync({
            line: n,
            ...signatureFault(
              error,
              `${seqnos}: the client's signature does not verify over the line's records ` +
                "(their session, direction, recipients, seqnos, ts, commitments or ciphertexts, " +
                "or the line's first, n or proof altered, or forged)",
            ),
            before,
          }),
      ).finally(settled);
    } else if (line.type === "relay" || line.type === "stored") {
      const fingerprint = line.author_fp;
      // The certificate is judged at each record's own time (TRANSCRIPT §5 step 4).
      const certs = forwarded.map((record) => {
        let cert = authorCerts.get(`${fingerprint}@${record.ts}`);
        if (!cert) {
          cert = trustAt.validate(authorDer!, { role: "client", now: new Date(record.ts) });
          if (authorCerts.size > 4096) authorCerts.clear();
          authorCerts.set(`${fingerprint}@${record.ts}`, cert);
        }
        return cert;
      });
      const group = line.type === "relay" ? line : null;
      active++;
      settledInOrder(certs).then(async (validated) => {
        if (!Array.isArray(validated)) {
          const { at, error } = validated;
          recordAsync({
            line: n,
            code: "BAD_CERT",
            reason:
              `relayed author's certificate at ${new Date(forwarded[at].ts).toISOString()}: ` +
              (error instanceof Error ? error.message : String(error)),
            before,
          });
          return;
        }
        const author = validated[0];
        const whose = `${author.commonName}'s relayed record${forwarded.length > 1 ? "s" : ""}`;
        try {
          if (group) await signatures.checkGroupNow(author, group.records, group, whose);
          else await signatures.check(author, forwarded[0], whose);
        } catch (error) {
          recordAsync({
            line: n,
            ...signatureFault(
              error,
              `relayed record${forwarded.length > 1 ? "s do" : " does"} not carry ` +
                `${author.commonName}'s signature (altered, or forged)`,
            ),
            before,
          });
          return;
        }
        const revokedFrom = trustAt.revokedFrom(author);
        forwarded.forEach((record, j) =>
          attribute(n, group ? j + 1 : undefined, author, fingerprint, revokedFrom, record)
        );
      }).finally(settled);
    }
    while (active >= limit) await slot();
  }
  while (active > 0) await slot();

  if (!lineProblem && !asyncProblem) {
    for (const { of, how, line } of answers) {
      const wrong = c2sAnswers.answer(of, how);
      if (wrong) {
        lineProblem = stop(line, wrong);
        break;
      }
    }
  }
  const found = [lineProblem as Found | null, asyncProblem as Found | null]
    .filter((p): p is Found => p !== null);
  const firstBad = found.sort((a, b) => a.line - b.line)[0] ?? null;
  const snap = firstBad ? firstBad.before : running;
  report.messages = { c2s: snap.c2s, s2c: snap.s2c };
  report.authors = [...authors.values()].sort((a, b) => a.commonName.localeCompare(b.commonName));
  report.unattributed.sort((a, b) => a.line - b.line || (a.item ?? 0) - (b.item ?? 0));
  report.refused = refused;
  report.queued = queued;
  report.stored = stored;
  report.span = { first: snap.first, last: snap.last };
  if (firstBad) {
    const { line, code, reason } = firstBad;
    return {
      problem: { line, code, reason },
      hashAt: null,
      latestTsAt: null,
      parties,
      counts: running,
    };
  }
  const hashAt = (c2s: number, s2c: number) => {
    const dC2s = digests.c2s.get(c2s) ?? (c2s === running.c2s ? hasher.digest("c2s") : undefined);
    const dS2c = digests.s2c.get(s2c) ?? (s2c === running.s2c ? hasher.digest("s2c") : undefined);
    return dC2s && dS2c ? hasher.at(c2s, dC2s, s2c, dS2c) : null;
  };
  const latestTsAt = (c2s: number, s2c: number) =>
    Math.max(latest.c2s.get(c2s) ?? lastTs.c2s, latest.s2c.get(s2c) ?? lastTs.s2c);
  return {
    problem: null,
    hashAt,
    latestTsAt,
    parties,
    counts: { c2s: running.c2s, s2c: running.s2c },
  };
}

/**
 * The line's first seqno exactly the next of its direction (the others follow it: a user's msg's
 * records are consecutive by their schema), and each ts it takes not below the one before it
 * (TRANSCRIPT §5 step 4).
 */
function checkSequence(
  dir: Direction,
  taken: readonly { seqno: number; ts: number }[],
  nextSeq: Record<Direction, number>,
  lastTs: Record<Direction, number>,
): Problem | null {
  const want = nextSeq[dir];
  const { seqno } = taken[0];
  if (seqno !== want) {
    const why = seqno < want
      ? "a replayed, duplicated or reordered line"
      : "a deleted or reordered line before it";
    return {
      line: 0,
      code: "TAMPERED",
      reason: `${dir} seqno ${seqno}, expected ${want} (${why})`,
    };
  }
  let previous = lastTs[dir];
  for (const { ts } of taken) {
    if (ts < previous) {
      return {
        line: 0,
        code: "TAMPERED",
        reason: `${dir} ts ${ts} is before the previous ${dir} ts ${previous}`,
      };
    }
    previous = ts;
  }
  return null;
}

/**
 * The bindings of docs/TRANSCRIPT.md §5 step 4 that need no signature check, except the dates and
 * seqnos of forwarded records (checkFreshness's).
 */
function checkBinding(line: Line, header: HeaderLine, me: string): Problem | null {
  const tampered = (reason: string): Problem => ({ line: 0, code: "TAMPERED", reason });
  const session = (r: MessageRecord, which: string) =>
    r.sid === header.session_id && r.dir === line.dir ? null : tampered(
      r.sid !== header.session_id
        ? `record of session ${r.sid}, not ${header.session_id} (moved from another session)${which}`
        : `a ${r.dir} record on a ${line.dir} line${which}`,
    );
  if (line.type === "msg" && line.dir === "c2s") {
    // The client's records (TRANSCRIPT §5 step 4), each before the line's signature.
    const many = line.records.length > 1;
    for (const [j, r] of line.records.entries()) {
      const which = many ? ` (record ${j + 1} of ${line.records.length})` : "";
      const moved = session(r, which);
      if (moved) return moved;
      if (!isClientRecipient(r.to)) {
        return tampered(`c2s record addressed to ${r.to.slice(0, 80)}${which}`);
      }
    }
    return null;
  }
  if (line.type === "msg") {
    const r = line.record;
    const moved = session(r, "");
    if (moved) return moved;
    if (r.sig) return tampered("the server's records carry no signature");
    if (r.to !== me) return tampered(`s2c record addressed to ${r.to.slice(0, 80)}, not ${me}`);
    return null;
  }
  if (line.type === "relay") {
    // Where every record of the group goes, before when any was signed (TRANSCRIPT §5 step 4).
    const many = line.records.length > 1;
    const which = (j: number) => many ? ` (record ${j + 1} of ${line.records.length})` : "";
    for (const [j, r] of line.records.entries()) {
      if (r.dir !== "c2s") return tampered(`a relayed record must be a user's (c2s)${which(j)}`);
      if (r.to !== LOBBY && r.to !== me) {
        return tampered(
          `relayed record addressed to ${r.to.slice(0, 80)}, not to ${me} or the lobby${which(j)}`,
        );
      }
    }
  }
  if (line.type === "stored") {
    // A record from the offline queue (PROTOCOL §6.6): whole (its own signature and path), and
    // for us alone; its dates are checkFreshness's.
    const r = line.record;
    if (!r.sig || !r.batch) return tampered("a stored record without its own sig and batch");
    if (r.dir !== "c2s") return tampered("a stored record must be a user's (c2s)");
    if (r.to !== me) {
      return tampered(`stored record addressed to ${r.to.slice(0, 80)}, not to ${me}`);
    }
  }
  return null;
}

/**
 * When each forwarded record was signed, record by record in the line's order (TRANSCRIPT §5 step
 * 4.4, as PROTOCOL §6.4 step 6 and the live client check it): its dates — a relayed record not
 * older than the session (REPLAY) nor dated after its hop (STALE), a stored one within
 * MAX_STORED_AGE before its hop (REPLAY) and not after it (STALE) — then its seqno, above every
 * earlier record of its author and author session in this file, live and stored deliveries sharing
 * that order (§6.6) and the line's own earlier records included (REPLAY). Records the marks when
 * the line passes.
 */
function checkFreshness(
  line: Line,
  forwarded: readonly MessageRecord[],
  header: HeaderLine,
  relaySeq: Map<string, number>,
): Problem | null {
  if (line.type !== "relay" && line.type !== "stored") return null;
  const stored = line.type === "stored";
  const what = stored ? "stored record" : "relayed record";
  const which = (j: number) =>
    forwarded.length > 1 ? ` (record ${j + 1} of ${forwarded.length})` : "";
  const marks = new Map<string, number>();
  for (const [j, r] of forwarded.entries()) {
    const oldest = stored
      ? line.ts - MAX_STORED_AGE_MS - VERIFY_SKEW_MS
      : header.session_time - VERIFY_SKEW_MS;
    if (r.ts < oldest) {
      return {
        line: 0,
        code: "REPLAY",
        reason: `${what} signed at ${new Date(r.ts).toISOString()}, ` + (stored
          ? "older than any offline queue keeps one"
          : `before this session began (${new Date(header.session_time).toISOString()}): an ` +
            "old record presented as new") +
          which(j),
      };
    }
    if (r.ts > line.ts + VERIFY_SKEW_MS) {
      return {
        line: 0,
        code: "STALE",
        reason: `${what} dated after its ${stored ? "delivery" : "relay"}${which(j)}`,
      };
    }
    const key = `${line.author_fp}/${r.sid}`;
    const last = marks.get(key) ?? relaySeq.get(key) ?? 0;
    if (r.seqno <= last) {
      return {
        line: 0,
        code: "REPLAY",
        reason: `${what} ${r.sid.slice(0, 8)}…/${r.seqno} repeats or precedes one already ` +
          `relayed (${last})${which(j)}`,
      };
    }
    marks.set(key, r.seqno);
  }
  for (const [key, seqno] of marks) relaySeq.set(key, seqno);
  return null;
}

/**
 * The values of `promises`, or the first (by place, not by time) that rejected: a relay's records
 * each have their certificate judged at their own time, and the first record that fails is
 * reported, whichever check finished first.
 */
async function settledInOrder<T>(
  promises: readonly Promise<T>[],
): Promise<T[] | { at: number; error: unknown }> {
  const results = await Promise.allSettled(promises);
  const at = results.findIndex((r) => r.status === "rejected");
  if (at !== -1) return { at, error: (results[at] as PromiseRejectedResult).reason };
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

function schemaReason(error: { issues: { path: (string | number)[]; message: string }[] }) {
  const issue = error.issues[0];
  const where = issue?.path.length ? `field ${issue.path.join(".")}: ` : "";
  return `${where}${issue?.message ?? "schema mismatch"}`;
}

/**
 * A failed record signature check (PROTOCOL §6.1): TAMPERED with lib's reason for a batch path
 * that does not fit (an edited record), else SIG_FAIL with `sigFailure`.
 */
function signatureFault(error: unknown, sigFailure: string): { code: VerifyCode; reason: string } {
  if (codeOf(error) === "TAMPERED") return { code: "TAMPERED", reason: (error as Error).message };
  return { code: "SIG_FAIL", reason: sigFailure };
}
