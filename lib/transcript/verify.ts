/**
 * Offline verification of a transcript and its receipts with only the CA
 * (docs/TRANSCRIPT.md §6). Streams the log line by line, checks each line in file
 * order and verifies signatures with bounded concurrency; reports the FIRST bad
 * line by line number, whatever order the asynchronous checks finish in.
 */
import { basename } from "node:path";
import { fromUtf8 } from "../bytes.ts";
import { type ErrorCode, SecureChatError } from "../errors.ts";
import { verify, type VerifyingKey } from "../crypto/signature.ts";
import type { TrustStore } from "../pki/validate.ts";
import { AuthorChecks } from "./authors.ts";
import { ownServerName, TrustAtSessionTime } from "./trust_at.ts";
import {
  basePathOfLog,
  type Direction,
  fingerprintOf,
  type HashState,
  type HeaderLine,
  HeaderLineSchema,
  MAX_LINE_BYTES,
  messageDigest,
  type MessageLine,
  MessageLineSchema,
  type Role,
  SIGNER_ROLE,
  TRANSCRIPT_VERSION,
  TranscriptHasher,
} from "./format.ts";
import { readLines } from "./lines.ts";
import { checkReceipt, parseReceipt, type ReceiptParties } from "./receipt.ts";

export type VerifyCode = Extract<ErrorCode, "TAMPERED" | "SIG_FAIL" | "BAD_CERT">;

export interface PartyReport {
  role: Role;
  commonName: string;
  /** hex SHA-256 of the certificate DER */
  fingerprint: string;
  serial: string;
  notAfter: string;
}

export interface ReceiptReport {
  path: string;
  /** true if found beside the log rather than named by the caller */
  autodetected: boolean;
  status: "valid" | "invalid" | "not-checked";
  /** the party that signed it (receipt `peer`) */
  signer?: Role;
  signerCommonName?: string;
  signerFingerprint?: string;
  c2sCount?: number;
  s2cCount?: number;
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
  /** header start time (ms); certificates are validated at this time, not now */
  startedAt: number | null;
  /** message lines that passed every check, per direction */
  messages: { c2s: number; s2c: number };
  signers: { client?: PartyReport; server?: PartyReport };
  /** Authors of relayed messages whose own signatures verified (PROTOCOL §6.4). */
  authors: { commonName: string; fingerprint: string; messages: number }[];
  /** first and last message ts (ms) among the lines that passed */
  span: { first: number | null; last: number | null };
  /** the recomputed transcript hash (hex), when every line is valid */
  transcriptSha256: string | null;
  receipts: ReceiptReport[];
  /** true when at least one valid receipt signed by a party covers exactly this transcript */
  confirmed: boolean;
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
}

interface Problem {
  line: number;
  code: VerifyCode;
  reason: string;
}

interface Party {
  fingerprint: string;
  key: VerifyingKey;
}

/** Context for the per-line checks; relay authorship will add its own check here. */
interface LineContext {
  header: HeaderLine;
  parties: Record<Role, Party>;
  nextSeq: Record<Direction, number>;
  lastTs: Record<Direction, number>;
}

/** Synchronous per-line checks, in order; the first problem wins. */
type LineCheck = (line: MessageLine, ctx: LineContext) => string | null;

const LINE_CHECKS: LineCheck[] = [
  (line) =>
    line.author && line.dir !== "s2c"
      ? "a c2s line carries an author record (only relays do)"
      : null,
  (line, ctx) => {
    const role = SIGNER_ROLE[line.dir];
    return line.signer === ctx.parties[role].fingerprint
      ? null
      : `${line.dir} line names signer ${line.signer.slice(0, 16)}…, not the ${role} certificate`;
  },
  (line, ctx) => {
    const want = ctx.nextSeq[line.dir];
    if (line.seqno === want) return null;
    const why = line.seqno < want
      ? "a replayed, duplicated or reordered line"
      : "a deleted or reordered line before it";
    return `${line.dir} seqno ${line.seqno}, expected ${want} (${why})`;
  },
  (line, ctx) =>
    line.ts >= ctx.lastTs[line.dir]
      ? null
      : `${line.dir} ts ${line.ts} is before the previous ${line.dir} ts ${ctx.lastTs[line.dir]}`,
];

function schemaReason(error: { issues: { path: (string | number)[]; message: string }[] }) {
  const issue = error.issues[0];
  const where = issue?.path.length ? `field ${issue.path.join(".")}: ` : "";
  return `${where}${issue?.message ?? "schema mismatch"}`;
}

function parseJsonLine(bytes: Uint8Array): unknown {
  return JSON.parse(fromUtf8(bytes));
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
    startedAt: null,
    messages: { c2s: 0, s2c: 0 },
    signers: {},
    authors: [],
    span: { first: null, last: null },
    transcriptSha256: null,
    receipts: [],
    confirmed: false,
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
  const receiptFiles = named.length > 0 || opts.autodetectReceipts === false ? named : [];
  if (named.length === 0 && opts.autodetectReceipts !== false) {
    const base = basePathOfLog(logPath);
    for (const path of [`${base}.receipt.json`, `${base}.peer-receipt.json`]) {
      if (path !== logPath && await exists(path)) receiptFiles.push({ path, autodetected: true });
    }
  }

  let file: Deno.FsFile;
  try {
    file = await Deno.open(logPath, { read: true });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read transcript ${logPath}`, { cause });
  }
  let state: HashState | null = null;
  let parties: Record<Role, Party> | null = null;
  let problem: Problem | null = null;
  try {
    const result = await checkLines(file, report, opts);
    problem = result.problem;
    state = result.state;
    parties = result.parties;
  } catch (cause) {
    if (cause instanceof SecureChatError) throw cause;
    throw new SecureChatError("IO_ERROR", `cannot read transcript ${logPath}`, { cause });
  } finally {
    try {
      file.close();
    } catch { /* closed */ }
  }

  if (problem) {
    report.code = problem.code;
    report.firstBadLine = problem.line;
    report.reason = problem.reason;
    report.receipts = receiptFiles.map((r) => ({ ...r, status: "not-checked" as const }));
    return report;
  }
  report.transcriptSha256 = state!.transcriptSha256;

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
  for (const { path, autodetected } of receiptFiles) {
    const entry: ReceiptReport = { path, autodetected, status: "invalid" };
    report.receipts.push(entry);
    let text: string;
    try {
      const stat = await Deno.stat(path);
      if (stat.size > 64 * 1024) throw new SecureChatError("TAMPERED", "receipt file too large");
      text = await Deno.readTextFile(path);
    } catch (cause) {
      if (cause instanceof SecureChatError) {
        entry.code = "TAMPERED";
        entry.reason = cause.message;
        continue;
      }
      throw new SecureChatError("IO_ERROR", `cannot read receipt ${path}`, { cause });
    }
    try {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        throw new SecureChatError("TAMPERED", "receipt is not JSON");
      }
      const receipt = parseReceipt(value);
      entry.signer = receipt.peer;
      entry.signerFingerprint = receipt.signer;
      entry.signerCommonName = report.signers[receipt.peer]?.commonName;
      entry.c2sCount = receipt.c2s_count;
      entry.s2cCount = receipt.s2c_count;
      await checkReceipt(receipt, {
        sessionId: report.sessionId!,
        state: state!,
        parties: receiptParties,
      });
      entry.status = "valid";
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
  report.confirmed = report.receipts.some((r) => r.status === "valid");
  report.ok = true;
  return report;
}

async function checkLines(
  file: Deno.FsFile,
  report: VerifyReport,
  opts: VerifyOptions,
): Promise<
  { problem: Problem | null; state: HashState | null; parties: Record<Role, Party> | null }
> {
  const lines = readLines(file, MAX_LINE_BYTES);
  const first = await lines.next();
  const fail = (line: number, code: VerifyCode, reason: string) => ({
    problem: { line, code, reason },
    state: null,
    parties: null,
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
    headerValue = parseJsonLine(headerRaw.bytes);
  } catch {
    return fail(1, "TAMPERED", "header is not UTF-8 JSON");
  }
  const version = (headerValue as { version?: unknown } | null)?.version;
  if (
    typeof headerValue === "object" && headerValue !== null &&
    (headerValue as { type?: unknown }).type === "securechat-transcript" &&
    version !== TRANSCRIPT_VERSION
  ) {
    return fail(1, "TAMPERED", `unsupported transcript version ${JSON.stringify(version)}`);
  }
  const parsedHeader = HeaderLineSchema.safeParse(headerValue);
  if (!parsedHeader.success) {
    return fail(1, "TAMPERED", `malformed header: ${schemaReason(parsedHeader.error)}`);
  }
  const header = parsedHeader.data;
  report.transcriptVersion = header.version;
  report.protocolVersion = header.protocol_version;
  report.sessionId = header.session_id;
  report.recordedBy = header.role;
  report.startedAt = header.started_at;

  // Certificates are validated at the session's start, not now, so that a transcript
  // stays verifiable after its certificates expire (docs/TRANSCRIPT.md §6.1).
  const at = new Date(header.started_at);
  const trustAt = new TrustAtSessionTime(opts.trust);
  const parties = {} as Record<Role, Party>;
  for (const role of ["client", "server"] as const) {
    const der = role === "client" ? header.client_cert : header.server_cert;
    try {
      const expectedName = role === "server" ? header.server_name ?? ownServerName(der) : undefined;
      const peer = await trustAt.validate(der, { role, now: at, expectedName });
      const key = peer.key;
      const fingerprint = fingerprintOf(der);
      parties[role] = { fingerprint, key };
      report.signers[role] = {
        role,
        commonName: peer.commonName,
        fingerprint,
        serial: peer.serial,
        notAfter: peer.notAfter.toISOString(),
      };
    } catch (cause) {
      const message = cause instanceof Error ? cause.message : String(cause);
      return fail(
        1,
        "BAD_CERT",
        `${role} certificate (validated at session start ${at.toISOString()}): ${message}`,
      );
    }
  }

  // ---- messages ----
  const hasher = new TranscriptHasher({
    protocolVersion: header.protocol_version,
    sessionId: header.session_id,
    clientFingerprint: parties.client.fingerprint,
    serverFingerprint: parties.server.fingerprint,
  });
  const ctx: LineContext = {
    header,
    parties,
    nextSeq: { c2s: 1, s2c: 1 },
    lastTs: { c2s: 0, s2c: 0 },
  };
  const authors = new AuthorChecks(trustAt);
  const limit = Math.max(1, opts.concurrency ?? 32);
  // A counting window: at most `limit` verifications in flight; `wake` resumes the reader.
  let active = 0;
  let wake: (() => void) | null = null;
  const settled = () => {
    active--;
    const w = wake;
    wake = null;
    w?.();
  };
  const slot = () => new Promise<void>((resolve) => (wake = resolve));
  // Counts and time span of the lines before a line; each problem carries the
  // snapshot taken before its line, so the report counts only lines before it.
  type Snapshot = { c2s: number; s2c: number; first: number | null; last: number | null };
  type Found = Problem & { before: Snapshot };
  const running: Snapshot = { c2s: 0, s2c: 0, first: null, last: null };
  let sigProblem: Found | null = null;
  let lineProblem: Found | null = null;
  const stop = (line: number, reason: string): Found => ({
    line,
    code: "TAMPERED",
    reason,
    before: { ...running },
  });

  for await (const raw of lines) {
    if (sigProblem) break;
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
    try {
      value = parseJsonLine(raw.bytes);
    } catch {
      lineProblem = stop(n, "not UTF-8 JSON");
      break;
    }
    const parsed = MessageLineSchema.safeParse(value);
    if (!parsed.success) {
      lineProblem = stop(n, `malformed: ${schemaReason(parsed.error)}`);
      break;
    }
    const line = parsed.data;
    let reason: string | null = null;
    for (const check of LINE_CHECKS) {
      reason = check(line, ctx);
      if (reason) break;
    }
    if (reason) {
      lineProblem = stop(n, reason);
      break;
    }
    const before = { ...running };
    ctx.nextSeq[line.dir]++;
    ctx.lastTs[line.dir] = line.ts;
    hasher.add(line.dir, line.seqno, line.ts, line.ct, line.sig);
    running[line.dir]++;
    running.first = running.first === null ? line.ts : Math.min(running.first, line.ts);
    running.last = running.last === null ? line.ts : Math.max(running.last, line.ts);

    const digest = messageDigest(line.seqno, line.ts, line.ct);
    const key = parties[SIGNER_ROLE[line.dir]].key;
    const dir = line.dir;
    active++;
    const record = (ok: boolean) => {
      if (!ok && (!sigProblem || n < sigProblem.line)) {
        sigProblem = {
          line: n,
          code: "SIG_FAIL",
          reason: `${dir} seqno ${line.seqno}: signature does not verify with the ` +
            `${SIGNER_ROLE[dir]} certificate (ciphertext, seqno, ts or sig altered, or forged)`,
          before,
        };
      }
    };
    verify(key, digest, line.sig).then(record, () => record(false)).finally(settled);
    if (line.author) {
      const author = line.author;
      active++;
      const recordAuthor = (problem: { code: VerifyCode; reason: string } | null) => {
        if (problem && (!sigProblem || n < sigProblem.line)) {
          sigProblem = { line: n, ...problem, before };
        }
      };
      authors.check(author, at).then(
        recordAuthor,
        (error) => recordAuthor({ code: "SIG_FAIL", reason: String(error) }),
      ).finally(settled);
    }
    while (active >= limit) await slot();
  }
  while (active > 0) await slot();

  const found = [lineProblem as Found | null, sigProblem as Found | null]
    .filter((p): p is Found => p !== null);
  const firstBad = found.sort((a, b) => a.line - b.line)[0] ?? null;
  const snap = firstBad ? firstBad.before : running;
  report.messages = { c2s: snap.c2s, s2c: snap.s2c };
  report.authors = authors.summary();
  report.span = { first: snap.first, last: snap.last };
  if (firstBad) {
    const { line, code, reason } = firstBad;
    return { problem: { line, code, reason }, state: null, parties };
  }
  return { problem: null, state: hasher.current(), parties };
}
