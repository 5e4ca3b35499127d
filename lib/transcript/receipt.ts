/**
 * SessionReceipts (docs/TRANSCRIPT.md §4): one party's signed statement of the
 * transcript hash at close. `sig = Sign(signer certificate key, transcript_hash)`
 * over the raw 32 bytes; every other field is either bound into that hash
 * (session_id, the counts, both certificates) or checked against it.
 */
import { z } from "zod";
import { fromBase64, fromHex, timingSafeEqual, toBase64 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { parseCertificate } from "../pki/certificate.ts";
import { base64Text } from "../wire/schema.ts";
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

export const RECEIPT_VERSION = 1;

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
  peer: z.enum(["client", "server"]),
  /** SHA-256 of the signer's certificate (DER), lowercase hex. */
  signer: FingerprintSchema,
  /** Seqno range the signer received (its peer's direction); 0/0 when it received none. */
  first_seq: count,
  last_seq: count,
  /** Messages per direction (each direction is contiguous from seqno 1). */
  c2s_count: count,
  s2c_count: count,
  transcript_sha256: FingerprintSchema,
  sig: base64Text(1, MAX_SIG_BYTES),
}).strict();

export type Receipt = z.infer<typeof ReceiptSchema>;

/** The direction a receipt's signer received: what first_seq/last_seq describe. */
export function receivedCount(role: Role, c2s: number, s2c: number): number {
  return role === "client" ? s2c : c2s;
}

/** Builds and signs a receipt over `state`. */
export async function signReceipt(
  signer: SigningKey,
  params: { sessionId: string; role: Role; signerFingerprint: string; state: HashState },
): Promise<Receipt> {
  const { state } = params;
  const received = receivedCount(params.role, state.c2s, state.s2c);
  const sig = await sign(signer, state.transcriptHash);
  return {
    type: "receipt",
    version: RECEIPT_VERSION,
    session_id: params.sessionId,
    peer: params.role,
    signer: params.signerFingerprint,
    first_seq: received > 0 ? 1 : 0,
    last_seq: received,
    c2s_count: state.c2s,
    s2c_count: state.s2c,
    transcript_sha256: state.transcriptSha256,
    sig: toBase64(sig),
  };
}

/** Schema check. @throws TAMPERED naming the first bad field. */
export function parseReceipt(value: unknown): Receipt {
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

/**
 * Checks a parsed receipt against a locally computed transcript hash, in the order
 * session → signer → counts → hash → signature, so the message names the most
 * specific problem.
 * @throws TAMPERED for any mismatch, SIG_FAIL for a bad signature
 */
export async function checkReceipt(
  receipt: Receipt,
  expected: { sessionId: string; state: HashState; parties: ReceiptParties },
): Promise<void> {
  const { state } = expected;
  if (receipt.session_id !== expected.sessionId) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt is for session ${receipt.session_id}, not ${expected.sessionId}`,
    );
  }
  const party = expected.parties[receipt.peer];
  if (receipt.signer !== party.fingerprint) {
    const other = receipt.peer === "client" ? "server" : "client";
    const what = receipt.signer === expected.parties[other].fingerprint
      ? `the ${other}'s certificate, but says peer "${receipt.peer}"`
      : "a certificate that is not one of the two parties";
    throw new SecureChatError("TAMPERED", `receipt signer ${receipt.signer} is ${what}`);
  }
  const received = receivedCount(receipt.peer, receipt.c2s_count, receipt.s2c_count);
  if (receipt.first_seq !== (received > 0 ? 1 : 0) || receipt.last_seq !== received) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt first_seq/last_seq ${receipt.first_seq}..${receipt.last_seq} disagree with its own counts`,
    );
  }
  if (receipt.c2s_count !== state.c2s || receipt.s2c_count !== state.s2c) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt covers c2s 1..${receipt.c2s_count} and s2c 1..${receipt.s2c_count}, ` +
        `the transcript has c2s 1..${state.c2s} and s2c 1..${state.s2c} ` +
        "(lines missing or added at the end of a direction, or a receipt for another transcript)",
    );
  }
  if (!timingSafeEqual(fromHex(receipt.transcript_sha256), state.transcriptHash)) {
    throw new SecureChatError(
      "TAMPERED",
      `receipt transcript_sha256 ${receipt.transcript_sha256} does not match the recomputed ` +
        `${state.transcriptSha256} (a receipt for another transcript, or the transcript was altered)`,
    );
  }
  const ok = await verify(await party.key(), state.transcriptHash, fromBase64(receipt.sig));
  if (!ok) {
    throw new SecureChatError(
      "SIG_FAIL",
      `receipt signature does not verify with the ${receipt.peer}'s certificate`,
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
