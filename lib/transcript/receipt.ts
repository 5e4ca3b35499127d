/**
 * SessionReceipts (docs/TRANSCRIPT.md §4): one party's signed statement of the
 * transcript hash over c2s 1..c2s_count and s2c 1..s2c_count.
 * `sig = Sign(signer key, "securechat/v2 <role> receipt" || 0x00 || transcript_hash)`;
 * every other field is either bound into that hash (session_id, the counts, both
 * certificates, the session time) or checked against it.
 */
import { z } from "zod";
import { concat, fromBase64, fromHex, timingSafeEqual, toBase64, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { parseCertificate } from "../pki/certificate.ts";
import { base64Text } from "../wire/schema.ts";
import { parseStrictJson } from "../wire/strict_json.ts";
import {
  importVerifyingKeySpki,
  sign,
  type SigningKey,
  verify,
  type VerifyingKey,
} from "../crypto/signature.ts";
import {
  FingerprintSchema,
  type HashState,
  MAX_SIG_BYTES,
  type Role,
  SessionIdSchema,
} from "./format.ts";

export const RECEIPT_VERSION = 2;

/** What a receipt signature covers: the role-labelled transcript hash (docs/TRANSCRIPT.md §4.1). */
export function receiptSignedData(role: Role, transcriptHash: Uint8Array): Uint8Array {
  return concat(utf8(`securechat/v2 ${role} receipt`), Uint8Array.of(0), transcriptHash);
}

const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/**
 * The receipt object, exactly as sent (inside a sealed frame) and stored.
 * Strict: unknown fields are rejected.
 */
export const ReceiptSchema = z.object({
  type: z.literal("receipt"),
  version: z.literal(RECEIPT_VERSION),
  session_id: SessionIdSchema,
  /** The role of the party that made and signed this receipt. */
  signer_role: z.enum(["client", "server"]),
  /** SHA-256 of the signer's certificate (DER), lowercase hex. */
  signer: FingerprintSchema,
  /** The receipt confirms c2s 1..c2s_count and s2c 1..s2c_count. */
  c2s_count: count,
  s2c_count: count,
  transcript_sha256: FingerprintSchema,
  sig: base64Text(1, MAX_SIG_BYTES),
}).strict();

export type Receipt = z.infer<typeof ReceiptSchema>;

/** Builds and signs a receipt over `state`. */
export async function signReceipt(
  signer: SigningKey,
  params: { sessionId: string; role: Role; signerFingerprint: string; state: HashState },
): Promise<Receipt> {
  const { state } = params;
  const sig = await sign(signer, receiptSignedData(params.role, state.transcriptHash));
  return {
    type: "receipt",
    version: RECEIPT_VERSION,
    session_id: params.sessionId,
    signer_role: params.role,
    signer: params.signerFingerprint,
    c2s_count: state.c2s,
    s2c_count: state.s2c,
    transcript_sha256: state.transcriptSha256,
    sig: toBase64(sig),
  };
}

/** Schema check. @throws TAMPERED naming the first bad field. */
export function parseReceipt(value: unknown): Receipt {
  if (typeof value === "string") {
    try {
      value = parseStrictJson(value);
    } catch (cause) {
      throw new SecureChatError(
        "TAMPERED",
        `receipt is not strict JSON: ${(cause as Error).message}`,
      );
    }
  }
  const parsed = ReceiptSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? ` (${issue.path.join(".")})` : "";
    throw new SecureChatError(
      "TAMPERED",
      `receipt is malformed${where}: ${issue?.message ?? "schema mismatch"}`,
    );
  }
  return parsed.data;
}

/** The two parties of the session, as the checker needs them. */
export interface ReceiptParties {
  client: { fingerprint: string; key: () => Promise<VerifyingKey> };
  server: { fingerprint: string; key: () => Promise<VerifyingKey> };
}

/** What a receipt is checked against: the transcript's counts and its hash at any prefix. */
export interface ReceiptExpectation {
  sessionId: string;
  counts: { c2s: number; s2c: number };
  /**
   * The transcript hash over c2s 1..c2s and s2c 1..s2c; null where a count is no line boundary
   * of its direction (TRANSCRIPT §3.2: inside a user's msg line of several records).
   */
  stateAt(c2s: number, s2c: number): HashState | null;
  parties: ReceiptParties;
}

/**
 * Checks a parsed receipt in the order of docs/TRANSCRIPT.md §4.2 (session → signer →
 * counts → hash → signature), so the message names the most specific problem.
 * @throws TAMPERED for any mismatch, SIG_FAIL for a bad signature
 */
export async function checkReceipt(receipt: Receipt, expected: ReceiptExpectation): Promise<void> {
  if (receipt.session_id !== expected.sessionId) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt is for session ${receipt.session_id}, not ${expected.sessionId}`,
    );
  }
  const role = receipt.signer_role;
  const party = expected.parties[role];
  if (receipt.signer !== party.fingerprint) {
    const other = role === "client" ? "server" : "client";
    const what = receipt.signer === expected.parties[other].fingerprint
      ? `the ${other}'s certificate, but says signer_role "${role}"`
      : "a certificate that is not one of the two parties";
    throw new SecureChatError("TAMPERED", `receipt signer ${receipt.signer} is ${what}`);
  }
  const { counts } = expected;
  if (receipt.c2s_count > counts.c2s || receipt.s2c_count > counts.s2c) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt covers c2s 1..${receipt.c2s_count} and s2c 1..${receipt.s2c_count}, ` +
        `the transcript has only c2s 1..${counts.c2s} and s2c 1..${counts.s2c} ` +
        "(lines missing at the end of a direction, or a receipt for another transcript)",
    );
  }
  const state = expected.stateAt(receipt.c2s_count, receipt.s2c_count);
  if (!state) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt covers c2s 1..${receipt.c2s_count} and s2c 1..${receipt.s2c_count}, which ends ` +
        "inside a line of the transcript (a c2s msg line of several records): a receipt covers " +
        "whole lines",
    );
  }
  if (!timingSafeEqual(fromHex(receipt.transcript_sha256), state.transcriptHash)) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt transcript_sha256 ${receipt.transcript_sha256} does not match the recomputed ` +
        `${state.transcriptSha256} over c2s 1..${state.c2s}, s2c 1..${state.s2c} ` +
        "(a receipt for another transcript, the transcript was altered, or the peer computes " +
        "another transcript format's hash: TRANSCRIPT §2.1)",
    );
  }
  const signed = receiptSignedData(role, state.transcriptHash);
  const ok = await verify(await party.key(), signed, fromBase64(receipt.sig));
  if (!ok) {
    throw new SecureChatError(
      "SIG_FAIL",
      `receipt signature does not verify with the ${role}'s certificate`,
    );
  }
}

/** SubjectPublicKeyInfo (DER) of a certificate. @throws BAD_CERT if it does not parse */
export function spkiOfCertificate(certDer: Uint8Array): Uint8Array {
  try {
    return parseCertificate(certDer).spki;
  } catch (cause) {
    throw new SecureChatError("BAD_CERT", "certificate does not parse", { cause });
  }
}

/** A memoised verifying-key loader for a certificate. */
export function lazyKey(spkiDer: Uint8Array): () => Promise<VerifyingKey> {
  let key: Promise<VerifyingKey> | undefined;
  return () => {
    key ??= importVerifyingKeySpki(spkiDer).catch((cause) => {
      throw new SecureChatError("BAD_CERT", "certificate public key cannot be imported", { cause });
    });
    return key;
  };
}

/** Serialised form of a receipt on disk: pretty JSON plus a newline. */
export function encodeReceiptFile(receipt: Receipt): string {
  return JSON.stringify(receipt, null, 2) + "\n";
}
