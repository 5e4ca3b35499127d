/**
 * Openings (docs/TRANSCRIPT.md §6): proving to a third party what one signed line
 * said, with only the CA certificate, without revealing any other line. An opening is
 * the author's certificate, the signed record (whole: a relay's record with the line's `sig` and
 * its derived path) and that record's content key.
 */
import { z } from "zod";
import { fromBase64, fromUtf8, toBase64 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import {
  type Body,
  decodeLine,
  decodeRecord,
  encodeRecord,
  isClientRecipient,
  LineShape,
  MAX_BATCH,
  type MessageRecord,
  openContent,
  RecordJsonShape,
  RecordSignatures,
  wholeRecordOfGroup,
} from "../message/record.ts";
import type { TrustStore } from "../pki/validate.ts";
import { base64Text } from "../wire/schema.ts";
import { zodOf } from "../wire/shape.ts";
import { parseStrictJson } from "../wire/strict_json.ts";
import {
  HeaderLineSchema,
  MAX_CERT_BYTES,
  MAX_LINE_BYTES,
  OPENING_VERSION,
  unsupportedFormat,
} from "./format.ts";
import { type RawLine, readLines } from "./lines.ts";
import { SessionCertList } from "../message/author_certs.ts";
import { TrustAtSessionTime } from "./trust_at.ts";

export const OpeningSchema = z.object({
  type: z.literal("securechat-opening"),
  version: z.literal(OPENING_VERSION),
  cert: base64Text(1, MAX_CERT_BYTES),
  record: zodOf(RecordJsonShape),
  k: base64Text(32, 32),
}).strict();
export type Opening = z.output<typeof OpeningSchema>;

/** What a checked opening proves. */
export interface OpenedLine {
  author: string;
  authorFingerprint: string;
  record: MessageRecord;
  body: Body;
}

/**
 * What `verify --reveal` opens (TRANSCRIPT §6): a line, and for a relay or user's msg line of
 * several records which of them (`item`, from 1).
 */
export interface RevealTarget {
  line: number;
  item?: number;
}

/**
 * Builds the opening of a line (or of one record of a relay or user's msg line) of a transcript
 * from the keys file beside it: the record whole as its author signed it — a group's record with
 * the line's `sig` and the path derived from its records and proof (TRANSCRIPT §6). The caller
 * verifies the transcript first.
 * @throws INVALID_INPUT (no such signed line or key), USAGE (a group line of several records
 *   without ITEM, or an ITEM it does not hold, or an ITEM on a line of one record whole),
 *   TAMPERED (a `.keys` line that names no record of the line), IO_ERROR
 */
export async function makeOpening(
  logPath: string,
  target: RevealTarget,
  keysPath: string,
): Promise<Opening> {
  const { line: lineNumber, item } = target;
  const file = await openOrFail(logPath);
  let header: z.output<typeof HeaderLineSchema> | undefined;
  let found: string | undefined;
  // A relay may only name its author's certificate: the session's list, run over the lines
  // up to the target as verify runs it, finds the line that introduced it (TRANSCRIPT §2.2).
  const sessionCerts = new SessionCertList<Uint8Array>();
  let authorDer: Uint8Array | undefined;
  try {
    for await (const raw of readLines(file, MAX_LINE_BYTES)) {
      if (raw.number === 1) {
        header = HeaderLineSchema.parse(parseStrictJson(fromUtf8(raw.bytes)));
        continue;
      }
      const text = fromUtf8(raw.bytes);
      const line = decodeLine(zodOf(LineShape).parse(parseStrictJson(text)));
      if (line.type === "relay" || line.type === "stored") {
        authorDer = sessionCerts.admit(line.author_fp, line.cert, (der) => der);
      }
      if (raw.number === lineNumber) {
        found = text;
        break;
      }
    }
  } finally {
    file.close();
  }
  if (!header || lineNumber < 2 || found === undefined) {
    throw new SecureChatError("INVALID_INPUT", `line ${lineNumber} is not a message line`);
  }
  const line = decodeLine(zodOf(LineShape).parse(parseStrictJson(found)));
  if (
    line.type === "refused" || line.type === "queued" || (line.type === "msg" && "record" in line)
  ) {
    throw new SecureChatError(
      "INVALID_INPUT",
      `line ${lineNumber} is not a signed record (only a user's own lines and relays can be ` +
        "opened to a third party; the server's lines are proven by its receipt)",
    );
  }
  if (line.type === "stored") {
    if (item !== undefined) {
      throw new SecureChatError(
        "USAGE",
        `line ${lineNumber} holds one record whole, not a group: open it with --reveal ` +
          `${lineNumber}`,
      );
    }
    const k = await findKey(keysPath, line.dir, line.seqno, undefined);
    return opening(authorDer!, line.record, k);
  }
  // A group (TRANSCRIPT §6): a relay's, its key by the line's seqno and the record's place; a
  // user's msg's, by the record's own c2s seqno.
  const what = line.type === "relay" ? "a relay" : "a msg line";
  const count = line.records.length;
  if (item === undefined && count > 1) {
    throw new SecureChatError(
      "USAGE",
      `line ${lineNumber} is ${what} of ${count} records: name one with --reveal ` +
        `${lineNumber}:J, J from 1 to ${count}`,
    );
  }
  if (item !== undefined && item > count) {
    throw new SecureChatError(
      "USAGE",
      `line ${lineNumber} is ${what} of ${count} record${count === 1 ? "" : "s"}: there is no ` +
        `record ${item}`,
    );
  }
  const j = item ?? 1;
  const record = wholeRecordOfGroup(line.records, line, j - 1);
  if (!record) {
    // verify checked the line: its proof fits its records (a caller that skipped it gets this).
    throw new SecureChatError("TAMPERED", `line ${lineNumber}: the proof does not fit its records`);
  }
  if (line.type === "msg") {
    const k = await findKey(keysPath, "c2s", record.seqno, undefined);
    return opening(header.client_cert, record, k);
  }
  const k = await findKey(keysPath, line.dir, line.seqno, { item: j, count });
  return opening(authorDer!, record, k);
}

/** The opening's JSON (TRANSCRIPT §6): the author's certificate, the whole record, its key. */
function opening(cert: Uint8Array, record: MessageRecord, k: Uint8Array): Opening {
  return {
    type: "securechat-opening",
    version: OPENING_VERSION,
    cert: toBase64(cert),
    record: encodeRecord(record),
    k: toBase64(k),
  };
}

/**
 * Checks an opening with only the CA (docs/TRANSCRIPT.md §6 steps 1–5).
 * @throws TAMPERED, BAD_CERT, SIG_FAIL, DECRYPT_FAIL, PROTOCOL_ERROR
 */
export async function checkOpening(value: unknown, trust: TrustStore): Promise<OpenedLine> {
  const parsed = OpeningSchema.safeParse(value);
  if (!parsed.success) {
    const other = (value as { type?: unknown } | null)?.type === "securechat-opening"
      ? unsupportedFormat("opening", (value as { version?: unknown }).version)
      : null;
    throw other ?? new SecureChatError("TAMPERED", "not a securechat opening");
  }
  const record = decodeRecord(parsed.data.record);
  if (!record.sig) throw new SecureChatError("TAMPERED", "the record is not signed");
  // A user's own record only (TRANSCRIPT §6 step 1): a signature its author made over anything
  // else is no line of any session.
  if (record.dir !== "c2s" || !isClientRecipient(record.to)) {
    throw new SecureChatError("TAMPERED", `not a user's record (${record.dir} to ${record.to})`);
  }
  const trustAt = new TrustAtSessionTime(trust);
  const at = new Date(record.ts);
  const author = await trustAt.validate(fromBase64(parsed.data.cert), { role: "client", now: at });
  const revokedFrom = trustAt.revokedFrom(author);
  if (revokedFrom && revokedFrom <= at) {
    throw new SecureChatError(
      "BAD_CERT",
      `the author's certificate is distrusted from ${revokedFrom.toISOString()}, before the record`,
    );
  }
  await new RecordSignatures("TAMPERED").check(author, record, `${author.commonName}'s record`);
  const body = openContent(record, fromBase64(parsed.data.k));
  return { author: author.commonName, authorFingerprint: author.fingerprint, record, body };
}

/** Reads and parses an opening file strictly. @throws IO_ERROR, TAMPERED */
export async function readOpening(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read opening ${path}`, { cause });
  }
  try {
    return parseStrictJson(text.trimEnd());
  } catch (cause) {
    throw new SecureChatError(
      "TAMPERED",
      `opening is not strict JSON: ${(cause as Error).message}`,
    );
  }
}

/**
 * The content key of `seqno` of `dir` in a `.keys` file (TRANSCRIPT §6): a c2s record's own seqno,
 * an s2c line's, and for a relay line of its record `relay.item`. A `.keys` line about it that
 * names no record of it — an `item` on a c2s key or on a line that holds one record whole, none on
 * a relay's, or one beyond its records — is TAMPERED: the keys file was edited, or is another
 * transcript's; so is any whole line that is no key line.
 * @throws INVALID_INPUT (no key for it), TAMPERED, IO_ERROR
 */
async function findKey(
  keysPath: string,
  dir: string,
  seqno: number,
  relay: { item: number; count: number } | undefined,
): Promise<Uint8Array> {
  const file = await openOrFail(keysPath);
  const what = relay ? `${dir} ${seqno} record ${relay.item}` : `${dir} ${seqno}`;
  let found: string | undefined;
  try {
    for await (const raw of readLines(file, KEY_LINE_BYTES)) {
      // A torn final line (the writer killed mid-write, TRANSCRIPT §2.3) holds no key.
      if (!raw.complete) continue;
      const entry = keyLine(raw);
      if (!entry) {
        throw new SecureChatError(
          "TAMPERED",
          `${keysPath}: line ${raw.number} is not a key line (strict JSON of exactly dir, seqno, ` +
            "item where it names a relay's record, and a 32-byte k): the file was edited",
        );
      }
      if (entry.dir !== dir || entry.seqno !== seqno) continue;
      const item = entry.item;
      const fits = relay ? item !== undefined && item <= relay.count : item === undefined;
      if (!fits) {
        const line = relay
          ? `a relay of ${relay.count} record${relay.count === 1 ? "" : "s"}`
          : dir === "c2s"
          ? "a record of the client's, whose key is named by its own seqno"
          : "one record whole";
        const names = item === undefined ? "names no item" : `names item ${JSON.stringify(item)}`;
        throw new SecureChatError(
          "TAMPERED",
          `${keysPath}: a key for ${dir} ${seqno} ${names}, but that line holds ${line}`,
        );
      }
      if (relay === undefined || item === relay.item) found ??= entry.k;
    }
  } finally {
    file.close();
  }
  // Every line read first: an edited file is TAMPERED wherever the edit is.
  if (found !== undefined) return fromBase64(found);
  throw new SecureChatError("INVALID_INPUT", `no key for ${what} in ${keysPath}`);
}

/** A `.keys` line is far shorter (a 32-byte key and three small members). */
const KEY_LINE_BYTES = 1024;

/** One line of a `.keys` file (TRANSCRIPT §6). */
const KeyLineSchema = z.object({
  dir: z.enum(["c2s", "s2c"]),
  seqno: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  item: z.number().int().min(1).max(MAX_BATCH).optional(),
  k: base64Text(32, 32),
}).strict();

/** A `.keys` line, or null for one that is no key line (not strict JSON, or not its schema). */
function keyLine(raw: RawLine): z.output<typeof KeyLineSchema> | null {
  if (raw.overlong) return null;
  try {
    const parsed = KeyLineSchema.safeParse(parseStrictJson(fromUtf8(raw.bytes)));
    return parsed.success ? parsed.data : null;
  } catch {
    return null; // not UTF-8, or not strict JSON
  }
}

async function openOrFail(path: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read ${path}`, { cause });
  }
}
