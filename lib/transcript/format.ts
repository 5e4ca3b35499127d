/**
 * The transcript file format and the transcript hash (docs/TRANSCRIPT.md).
 *
 * A transcript is a JSON Lines file: line 1 is the header, every further line is
 * one session message (msg, relay, refused) of either direction, in arrival order;
 * the lines themselves are defined with the message record (lib/message/record.ts). The transcript
 * hash is defined canonically (per direction, in seqno order, over fixed-width and
 * length-prefixed fields) so that both parties compute the same 32 bytes no matter
 * how the two directions interleaved on arrival.
 */
import { sha256, type Sha256Hasher, sha256Hasher } from "#sync-crypto";
import { z } from "zod";
import { type ByteBuilder, ScratchBytes, toBase64, toHex, u32be, u64be, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { type Direction, MAX_CERT_BYTES, MAX_CT_BYTES, MAX_SIG_BYTES } from "../message/record.ts";
import { base64Bytes } from "../wire/schema.ts";

/** Line encodings hashed at once, at most (TranscriptHasher.addAll). */
const HASH_BATCH_BYTES = 32 * 1024;
/** Where line encodings are laid out to be hashed: one buffer, reused. */
const encodingScratch = new ScratchBytes(2 * HASH_BATCH_BYTES);

/**
 * A line as the transcript hash takes it: it writes its line_enc (TRANSCRIPT §3.1), and takes the
 * seqnos `seqno` … `lastSeqno` of its direction (several for a user's msg of several records,
 * TRANSCRIPT §2.2; one for every other line, `lastSeqno` absent).
 */
export interface EncodedLine {
  readonly seqno: number;
  readonly lastSeqno?: number;
  writeEncoding(out: ByteBuilder): void;
}

/**
 * Version of the transcript file / hash format (not of the wire protocol): 7 since a group's
 * line_enc holds SHA-256 of its group_enc, not group_enc (TRANSCRIPT §3.1); 6 since a user's msg
 * line carries a group of its batch with the batch's `sig` and `proof` once (PROTOCOL §6.3); 5
 * since a relay line carries a group of one batch's records with the batch's `sig` and `proof`
 * once (PROTOCOL §6.4); 4 since the ChaCha20-Poly1305 content cipher (PROTOCOL §6.1, §11: `ct`
 * is sealed otherwise);
 * 3 since signed batches (record_enc covers `batch`, TRANSCRIPT §3.1).
 */
export const TRANSCRIPT_VERSION = 7;
/**
 * Version of the opening format (TRANSCRIPT §6): 3 since the ChaCha20-Poly1305 content cipher,
 * 2 since signed batches, whose record carries `batch`.
 */
export const OPENING_VERSION = 3;
/**
 * The files earlier securechats wrote, and what reads them (TRANSCRIPT §2.1's table, §6). This one
 * reads only the current formats; a file of another format cannot be judged here, which is no
 * evidence that it was edited, so it gets its own code (interop finding 72).
 */
const OTHER_FORMATS = {
  transcript: {
    current: TRANSCRIPT_VERSION,
    earlier: {
      1: "written by protocol v1 (PROTOCOL §11); a securechat of protocol v1 reads it",
      2: "written before signed batches (PROTOCOL §11); a securechat from before them " +
        "(commit 9c9d09a, session 8) reads it",
      3: "written before the ChaCha20-Poly1305 content cipher (PROTOCOL §11); a securechat " +
        "from 9c9d09a to 75c258e (sessions 8 to 10) reads it",
      4: "written before relays carried groups of a batch's records (PROTOCOL §11); a " +
        "securechat of sessions 11 to 14 (up to 82c2781) reads it",
      5: "written before a user's msg carried a group of its batch's records (PROTOCOL §11); " +
        "a securechat of session 15 (up to ed384f7) reads it",
      6: "written before a group's line hashed its digest (TRANSCRIPT §3.1); a securechat of " +
        "sessions 16 to 21 (up to 1ac3ad3) reads it",
    } as Record<number, string>,
  },
  opening: {
    current: OPENING_VERSION,
    earlier: {
      1: "made before signed batches (PROTOCOL §11); a securechat from before them " +
        "(commit 9c9d09a, session 8) reads it",
      2: "made before the ChaCha20-Poly1305 content cipher (PROTOCOL §11); a securechat " +
        "from 9c9d09a to 75c258e (sessions 8 to 10) reads it",
    } as Record<number, string>,
  },
} as const;

/**
 * The UNSUPPORTED_FORMAT error for a file whose `version` is a format number other than the one this
 * securechat reads; null for the current version and for anything that is no format number (the
 * schema then refuses it as edited: TAMPERED). The number is not under any signature, so the error
 * says only what this securechat knows: an earlier format is read by the securechat it names (an
 * edited file fails there), and no evidence of tampering here; a later one may be honest or an
 * edited header, which nothing here can tell apart (review9 R9-6).
 */
export function unsupportedFormat(
  kind: keyof typeof OTHER_FORMATS,
  version: unknown,
): SecureChatError | null {
  const { current, earlier } = OTHER_FORMATS[kind];
  if (!Number.isSafeInteger(version) || (version as number) < 1 || version === current) return null;
  const v = version as number;
  const what = v < current
    ? `${earlier[v] ?? "an earlier format"}; not evidence of tampering`
    : "newer than this securechat, or a header edited to say so: the format number is not signed";
  return new SecureChatError(
    "UNSUPPORTED_FORMAT",
    `${kind} format ${v} (${what}): this securechat reads format ${current} only, and cannot ` +
      "judge this file either way",
    { hint: UNSUPPORTED_FORMAT_HINT },
  );
}

/** What a user of `verify` does with an UNSUPPORTED_FORMAT file. */
export const UNSUPPORTED_FORMAT_HINT =
  "check the file with a securechat that reads its format; until then it is not judged";

/** Domain-separation label of the v2 transcript hash: ASCII, then one 0x00 byte. */
export const TRANSCRIPT_HASH_LABEL = "securechat/v2 transcript";
/** Hard limits a verifier applies before doing any work on a line. */
export { MAX_CERT_BYTES, MAX_CT_BYTES, MAX_SIG_BYTES };
/** A line longer than this cannot be valid (a relay: two certificates' worth and a 64 KiB ct). */
export const MAX_LINE_BYTES = 160 * 1024;

export type { Direction };
export type Role = "client" | "server";

/** The role whose certificate key signs each direction. */
export const SIGNER_ROLE: Record<Direction, Role> = { c2s: "client", s2c: "server" };

const SESSION_ID_RE = /^[0-9a-f]{32}$/;
const FINGERPRINT_RE = /^[0-9a-f]{64}$/;
const uint = () => z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const SessionIdSchema = z.string().regex(SESSION_ID_RE, "32 lowercase hex characters");
export const FingerprintSchema = z.string().regex(FINGERPRINT_RE, "64 lowercase hex characters");

/** Line 1 of a v2 transcript. Strict: unknown fields are rejected. */
export const HeaderLineSchema = z.object({
  type: z.literal("securechat-transcript"),
  version: z.literal(TRANSCRIPT_VERSION),
  protocol_version: z.number().int().min(0).max(0xffff_ffff),
  session_id: SessionIdSchema,
  role: z.enum(["client", "server"]),
  /** server_hello.time: hashed, so both receipts sign it; certificates are judged at it. */
  session_time: uint(),
  started_at: uint(),
  /** Optional: the server name the client dialled / the server serves; matched by verify. */
  server_name: z.string().min(1).max(253).optional(),
  client_cert: base64Bytes(1, MAX_CERT_BYTES),
  server_cert: base64Bytes(1, MAX_CERT_BYTES),
}).strict();

export type HeaderLine = z.output<typeof HeaderLineSchema>;

export function sha256Sync(...parts: Uint8Array[]): Uint8Array {
  return sha256(...parts);
}

/** The JSON text of the header line, without the newline. Field order is fixed. */
export function encodeHeaderLine(h: {
  protocolVersion: number;
  sessionId: string;
  role: Role;
  sessionTime: number;
  startedAt: number;
  clientCertDer: Uint8Array;
  serverCertDer: Uint8Array;
  serverName?: string;
}): string {
  return JSON.stringify({
    type: "securechat-transcript",
    version: TRANSCRIPT_VERSION,
    protocol_version: h.protocolVersion,
    session_id: h.sessionId,
    role: h.role,
    session_time: h.sessionTime,
    started_at: h.startedAt,
    ...(h.serverName === undefined ? {} : { server_name: h.serverName }),
    client_cert: toBase64(h.clientCertDer),
    server_cert: toBase64(h.serverCertDer),
  });
}

/** What the transcript hash binds besides the messages. */
export interface HashContext {
  protocolVersion: number;
  sessionId: string;
  sessionTime: number;
  clientFingerprint: string;
  serverFingerprint: string;
}

export interface HashState {
  /** hex SHA-256 transcript hash */
  transcriptSha256: string;
  transcriptHash: Uint8Array;
  c2s: number;
  s2c: number;
}

/**
 * The transcript hash, computed incrementally: one running SHA-256 per direction
 * over that direction's line encodings in seqno order, then a fixed-width final
 * block (docs/TRANSCRIPT.md §3). Lines must be added per direction in seqno order
 * 1, 2, 3, ...; the caller enforces that.
 */
export class TranscriptHasher {
  readonly #ctx: HashContext;
  readonly #running: Record<Direction, Sha256Hasher> = {
    c2s: sha256Hasher(),
    s2c: sha256Hasher(),
  };
  readonly counts: Record<Direction, number> = { c2s: 0, s2c: 0 };

  constructor(ctx: HashContext) {
    if (!SESSION_ID_RE.test(ctx.sessionId)) {
      throw new SecureChatError("INVALID_INPUT", "session_id must be 32 lowercase hex characters");
    }
    this.#ctx = ctx;
  }

  /**
   * Adds one line's encoding (line_enc of docs/TRANSCRIPT.md §3.1) to `dir`; the direction's count
   * is then the line's last seqno (TRANSCRIPT §3.2: counts are seqnos, at line boundaries).
   */
  add(dir: Direction, line: EncodedLine): void {
    encodingScratch.use((out) => {
      line.writeEncoding(out);
      this.#running[dir].update(out.done());
    });
    this.counts[dir] = line.lastSeqno ?? line.seqno;
  }

  /**
   * Adds lines, each to its own direction, in order: their encodings hashed together, one call
   * into the hash per direction and HASH_BATCH_BYTES (not one per line: a server adds a turn's
   * lines at once).
   */
  addAll(lines: readonly (EncodedLine & { readonly dir: Direction })[]): void {
    for (const dir of ["c2s", "s2c"] as const) {
      encodingScratch.use((out) => {
        for (const line of lines) {
          if (line.dir !== dir) continue;
          line.writeEncoding(out);
          this.counts[dir] = line.lastSeqno ?? line.seqno;
          if (out.length < HASH_BATCH_BYTES) continue;
          this.#running[dir].update(out.done());
          out.reset();
        }
        if (out.length > 0) this.#running[dir].update(out.done());
      });
    }
  }

  /** D_dir at the current count (docs/TRANSCRIPT.md §3.2): for a receipt covering a prefix. */
  digest(dir: Direction): Uint8Array {
    return this.#running[dir].copy().digest();
  }

  /** The hash over everything added so far; the hasher stays usable. */
  current(): HashState {
    return this.at(this.counts.c2s, this.digest("c2s"), this.counts.s2c, this.digest("s2c"));
  }

  /** The hash for given counts and per-direction digests (a receipt over a prefix). */
  at(nC2s: number, dC2s: Uint8Array, nS2c: number, dS2c: Uint8Array): HashState {
    const hash = finalTranscriptHash(this.#ctx, nC2s, dC2s, nS2c, dS2c);
    return { transcriptHash: hash, transcriptSha256: toHex(hash), c2s: nC2s, s2c: nS2c };
  }
}

/** The final block (docs/TRANSCRIPT.md §3.3), exported for the test vectors. */
export function finalTranscriptHash(
  ctx: HashContext,
  nC2s: number,
  dC2s: Uint8Array,
  nS2c: number,
  dS2c: Uint8Array,
): Uint8Array {
  return sha256(
    utf8(TRANSCRIPT_HASH_LABEL),
    Uint8Array.of(0),
    u32be(ctx.protocolVersion),
    hexBytes(ctx.sessionId, 16),
    u64be(ctx.sessionTime),
    hexBytes(ctx.clientFingerprint, 32),
    hexBytes(ctx.serverFingerprint, 32),
    u64be(nC2s),
    dC2s,
    u64be(nS2c),
    dS2c,
  );
}

function hexBytes(hex: string, length: number): Uint8Array {
  if (hex.length !== 2 * length || !/^[0-9a-f]*$/.test(hex)) {
    throw new SecureChatError("INVALID_INPUT", `expected ${2 * length} lowercase hex characters`);
  }
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** `<sessionId>-<role>` plus a sortable UTC start time: the base name of all three files. */
export function baseNameOf(sessionId: string, role: Role, startedAt: number): string {
  const t = new Date(startedAt).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}Z$/, "Z");
  return `${t}-${sessionId}-${role}`;
}

/** `<base>.log` → `<base>`; any other name is kept whole. */
export function basePathOfLog(logPath: string): string {
  return logPath.endsWith(".log") ? logPath.slice(0, -4) : logPath;
}
