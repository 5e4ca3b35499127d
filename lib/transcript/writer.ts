/**
 * The append-only transcript of one session (docs/TRANSCRIPT.md §2, §5).
 *
 * Crash behaviour: every line (header included) is built in memory and handed to
 * the OS in one write on a file opened with O_APPEND, so killing the process leaves
 * whole lines only, except at worst a torn final line that `verify` reports. There
 * is no fsync per message (the OS keeps what was written when the process dies);
 * `finish` and `abort` fsync the log and the receipts.
 */
import { join } from "node:path";
import { timingSafeEqual, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { ensurePrivateDir } from "../private_dir.ts";
import type { SigningKey } from "../crypto/signature.ts";
import { PROTOCOL_VERSION } from "../wire/messages.ts";
import {
  type AuthorEntry,
  baseNameOf,
  type Direction,
  encodeHeaderLine,
  encodeMessageLine,
  fingerprintOf,
  type HashState,
  MAX_CT_BYTES,
  MAX_SIG_BYTES,
  SIGNER_ROLE,
  TranscriptHasher,
} from "./format.ts";
import {
  checkReceipt,
  encodeReceiptFile,
  lazyKey,
  parseReceipt,
  type Receipt,
  signReceipt,
  spkiOfCertificate,
} from "./receipt.ts";

export interface TranscriptHeader {
  /** 32 lowercase hex characters (the 16-byte session_id of the key schedule). */
  sessionId: string;
  /** Which side writes this file. */
  role: "client" | "server";
  clientCertDer: Uint8Array;
  serverCertDer: Uint8Array;
  /** ms since the Unix epoch; certificates are validated at this time by `verify`. */
  startedAt: number;
  /**
   * Optional: the server's name (what the client dialled; the server's own
   * --name). Recorded so verify can match it against the server certificate.
   */
  serverName?: string;
  /** Wire protocol version negotiated; defaults to lib/wire PROTOCOL_VERSION. */
  protocolVersion?: number;
}

export interface TranscriptEntry {
  dir: "c2s" | "s2c";
  seqno: number;
  ts: number;
  /** AES-GCM ciphertext||tag exactly as received / sent (decoded from the frame's base64). */
  ct: Uint8Array;
  /** The msg signature bytes exactly as on the wire. */
  sig: Uint8Array;
  /** For an s2c relay: the author's own message (PROTOCOL §6.4). */
  author?: AuthorEntry;
}

export interface FinishResult {
  receiptPath: string;
  peerReceiptPath?: string;
}

const FILE_MODE = 0o600;

function ioError(what: string, cause: unknown): SecureChatError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new SecureChatError("TRANSCRIPT_IO", `${what}${detail}`, {
    cause,
    hint: "check that the --transcripts directory exists, is writable and the disk is not full",
  });
}

/** Writes all of `bytes`; one write call in practice for a regular file in append mode. */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
}

export class TranscriptWriter {
  /** Path of the `.log` file. */
  readonly path: string;
  /** Path without `.log`: receipts go to `<base>.receipt.json` and `<base>.peer-receipt.json`. */
  readonly basePath: string;
  readonly header: Readonly<TranscriptHeader>;
  readonly #file: Deno.FsFile;
  readonly #hasher: TranscriptHasher;
  readonly #fingerprints: { client: string; server: string };
  readonly #lastTs: Record<Direction, number> = { c2s: -1, s2c: -1 };
  #queue: Promise<void> = Promise.resolve();
  #failed: SecureChatError | null = null;
  #closed = false;

  private constructor(
    path: string,
    basePath: string,
    header: TranscriptHeader,
    file: Deno.FsFile,
    hasher: TranscriptHasher,
    fingerprints: { client: string; server: string },
  ) {
    this.path = path;
    this.basePath = basePath;
    this.header = header;
    this.#file = file;
    this.#hasher = hasher;
    this.#fingerprints = fingerprints;
  }

  /**
   * Creates `<dir>/<base>.log` (mode 0600; `dir` is created with mode 0700) and
   * writes the header line.
   * @throws TRANSCRIPT_IO if the directory or file cannot be created or written
   */
  static async create(dir: string, header: TranscriptHeader): Promise<TranscriptWriter> {
    const protocolVersion = header.protocolVersion ?? PROTOCOL_VERSION;
    if (!Number.isSafeInteger(header.startedAt) || header.startedAt < 0) {
      throw new SecureChatError("INVALID_INPUT", "startedAt must be ms since the epoch");
    }
    const fingerprints = {
      client: fingerprintOf(header.clientCertDer),
      server: fingerprintOf(header.serverCertDer),
    };
    const hasher = new TranscriptHasher({
      protocolVersion,
      sessionId: header.sessionId,
      clientFingerprint: fingerprints.client,
      serverFingerprint: fingerprints.server,
    });
    try {
      await ensurePrivateDir(dir);
    } catch (cause) {
      throw ioError(`cannot create transcript directory ${dir}`, cause);
    }
    const basePath = join(dir, baseNameOf(header.sessionId, header.role, header.startedAt));
    const path = `${basePath}.log`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, {
        write: true,
        append: true,
        createNew: true,
        mode: FILE_MODE,
      });
    } catch (cause) {
      throw ioError(`cannot create transcript ${path}`, cause);
    }
    const writer = new TranscriptWriter(
      path,
      basePath,
      { ...header, protocolVersion },
      file,
      hasher,
      fingerprints,
    );
    try {
      if (Deno.build.os !== "windows") await Deno.chmod(path, FILE_MODE);
      const line = encodeHeaderLine({ ...header, protocolVersion });
      await writeAll(file, utf8(line + "\n"));
    } catch (cause) {
      try {
        file.close();
      } catch { /* already closed */ }
      throw ioError(`cannot write transcript ${path}`, cause);
    }
    return writer;
  }

  /** Messages recorded so far per direction. */
  get counts(): Readonly<Record<Direction, number>> {
    return { ...this.#hasher.counts };
  }

  /** The transcript hash over everything recorded so far. */
  currentHash(): HashState {
    return this.#hasher.current();
  }

  /**
   * Appends one accepted msg frame. Calls are serialised in call order, so call it
   * in the order messages were accepted. Per direction, seqno must be the next one
   * (1, 2, ...) and ts must not decrease: anything else is PROTOCOL_ERROR and
   * nothing is written (the session should treat it as the peer's protocol error).
   * @throws TRANSCRIPT_IO on a write failure; the writer is then unusable
   */
  append(entry: TranscriptEntry): Promise<void> {
    const run = this.#queue.then(() => this.#appendNow(entry));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #appendNow(entry: TranscriptEntry): Promise<void> {
    if (this.#failed) throw this.#failed;
    if (this.#closed) throw new SecureChatError("TRANSCRIPT_IO", "transcript already closed");
    const { dir, seqno, ts, ct, sig } = entry;
    if (dir !== "c2s" && dir !== "s2c") {
      throw new SecureChatError("INVALID_INPUT", `bad direction ${String(dir)}`);
    }
    const expected = this.#hasher.counts[dir] + 1;
    if (seqno !== expected) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        `transcript: ${dir} seqno ${seqno} is not the next one (${expected})`,
      );
    }
    if (!Number.isSafeInteger(ts) || ts < this.#lastTs[dir]) {
      throw new SecureChatError("PROTOCOL_ERROR", `transcript: ${dir} timestamp went backwards`);
    }
    if (entry.author && dir !== "s2c") {
      throw new SecureChatError("INVALID_INPUT", "transcript: only s2c lines relay an author");
    }
    if (ct.length < 1 || ct.length > MAX_CT_BYTES || sig.length < 1 || sig.length > MAX_SIG_BYTES) {
      throw new SecureChatError("INVALID_INPUT", "transcript: ct or sig length out of range");
    }
    const line = encodeMessageLine(entry, this.#fingerprints[SIGNER_ROLE[dir]]);
    try {
      await writeAll(this.#file, utf8(line + "\n"));
    } catch (cause) {
      this.#failed = ioError(`cannot append to transcript ${this.path}`, cause);
      throw this.#failed;
    }
    this.#hasher.add(dir, seqno, ts, ct, sig);
    this.#lastTs[dir] = ts;
  }

  /** Own receipt over the hash of everything appended (waits for pending appends). */
  async createReceipt(signer: SigningKey): Promise<Receipt> {
    await this.#queue;
    if (this.#failed) throw this.#failed;
    const role = this.header.role;
    const receipt = await signReceipt(signer, {
      sessionId: this.header.sessionId,
      role,
      signerFingerprint: this.#fingerprints[role],
      state: this.#hasher.current(),
    });
    // Self-check: a signing key that does not belong to our certificate would
    // produce a receipt nobody can verify; say so now rather than at verify time.
    const ownDer = role === "client" ? this.header.clientCertDer : this.header.serverCertDer;
    try {
      await checkReceipt(receipt, this.#expectation(role, ownDer));
    } catch (cause) {
      throw new SecureChatError(
        "INTERNAL",
        "own receipt does not verify: the signing key does not match our certificate",
        { cause },
      );
    }
    return receipt;
  }

  /**
   * Checks the peer's receipt: schema, session, that it is signed by `peerCertDer`
   * (which must be the peer certificate of the header), equal transcript hash, signature.
   * @throws TAMPERED (malformed / other session / other hash), BAD_CERT, SIG_FAIL
   */
  async acceptPeerReceipt(receipt: unknown, peerCertDer: Uint8Array): Promise<Receipt> {
    await this.#queue;
    const parsed = parseReceipt(receipt);
    const peerRole = this.header.role === "client" ? "server" : "client";
    const headerPeer = peerRole === "client"
      ? this.header.clientCertDer
      : this.header.serverCertDer;
    if (!timingSafeEqual(peerCertDer, headerPeer)) {
      throw new SecureChatError("BAD_CERT", "receipt checked against a certificate not in session");
    }
    if (parsed.peer !== peerRole) {
      throw new SecureChatError("TAMPERED", `peer receipt says it is from the ${parsed.peer}`);
    }
    await checkReceipt(parsed, this.#expectation(peerRole, peerCertDer));
    return parsed;
  }

  #expectation(role: "client" | "server", certDer: Uint8Array) {
    const key = lazyKey(spkiOfCertificate(certDer));
    const unusable = () => Promise.reject(new SecureChatError("INTERNAL", "unused key"));
    return {
      sessionId: this.header.sessionId,
      state: this.#hasher.current(),
      parties: {
        client: { fingerprint: this.#fingerprints.client, key: role === "client" ? key : unusable },
        server: { fingerprint: this.#fingerprints.server, key: role === "server" ? key : unusable },
      },
    };
  }

  /**
   * Writes `<base>.receipt.json` and, if given, `<base>.peer-receipt.json` (0600,
   * fsynced), fsyncs and closes the log.
   * @throws TRANSCRIPT_IO
   */
  async finish(own: Receipt, peer?: Receipt): Promise<FinishResult> {
    await this.#queue;
    if (this.#closed) throw new SecureChatError("TRANSCRIPT_IO", "transcript already closed");
    const receiptPath = `${this.basePath}.receipt.json`;
    const peerReceiptPath = peer ? `${this.basePath}.peer-receipt.json` : undefined;
    try {
      await this.#closeLog();
      await writeSmallFile(receiptPath, encodeReceiptFile(own));
      if (peer && peerReceiptPath) await writeSmallFile(peerReceiptPath, encodeReceiptFile(peer));
      await syncDir(this.basePath);
    } catch (cause) {
      if (cause instanceof SecureChatError) throw cause;
      throw ioError(`cannot finish transcript ${this.path}`, cause);
    }
    return peerReceiptPath ? { receiptPath, peerReceiptPath } : { receiptPath };
  }

  /** Closes without receipts (a cut-off session): the log ends at its last whole line. */
  async abort(): Promise<void> {
    await this.#queue;
    if (this.#closed) return;
    try {
      await this.#closeLog();
    } catch (cause) {
      throw ioError(`cannot close transcript ${this.path}`, cause);
    }
  }

  async #closeLog(): Promise<void> {
    this.#closed = true;
    try {
      await this.#file.sync();
    } finally {
      this.#file.close();
    }
  }
}

async function writeSmallFile(path: string, text: string): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true, mode: FILE_MODE });
  try {
    if (Deno.build.os !== "windows") await Deno.chmod(path, FILE_MODE);
    await writeAll(file, utf8(text));
    await file.sync();
  } finally {
    file.close();
  }
}

/** Best effort: makes the new directory entries durable (Linux/macOS). */
async function syncDir(basePath: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  const dir = basePath.slice(0, Math.max(basePath.lastIndexOf("/"), 0)) || ".";
  try {
    const handle = await Deno.open(dir, { read: true });
    try {
      await handle.sync();
    } finally {
      handle.close();
    }
  } catch { /* not supported on this platform / filesystem */ }
}
