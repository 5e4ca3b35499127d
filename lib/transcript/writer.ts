/**
 * The append-only transcript of one session (docs/TRANSCRIPT.md §2, §3).
 *
 * Lines are checked when they are appended, then hashed and written in batches: everything
 * appended during one turn of the event loop goes to the storage in one append. Where the
 * bytes go is the injected TranscriptStorage's business (./storage.ts: a private directory
 * for the CLI and the server, which also closes an idle log's descriptor; memory and
 * IndexedDB in the browser). Killing the process leaves whole lines
 * only, except at worst a torn final line that `verify` reports; the batch not yet
 * written (lines of the last few milliseconds) is what a crash can lose. `finish`
 * and `abort` fsync the log and the receipts.
 */
import { ScratchBytes, timingSafeEqual, toBase64, utf8 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import type { SigningKey } from "../crypto/signature.ts";
import type { PreparedLine } from "../message/record.ts";
import { PROTOCOL_VERSION } from "../wire/messages.ts";
import {
  baseNameOf,
  type Direction,
  encodeHeaderLine,
  type HashState,
  TranscriptHasher,
} from "./format.ts";
import { fingerprintOf } from "../pki/describe.ts";
import {
  checkReceipt,
  encodeReceiptFile,
  lazyKey,
  parseReceipt,
  type Receipt,
  signReceipt,
  spkiOfCertificate,
} from "./receipt.ts";
import type { AppendSink, TranscriptStorage } from "./storage.ts";
import { turnBegan } from "../turn.ts";

export interface TranscriptHeader {
  /** 32 lowercase hex characters (the 16-byte session_id of the key schedule). */
  sessionId: string;
  /** Which side writes this file. */
  role: "client" | "server";
  clientCertDer: Uint8Array;
  serverCertDer: Uint8Array;
  /** server_hello.time (ms): hashed, the time verify judges certificates at. */
  sessionTime: number;
  /** ms since the Unix epoch: this side's start, names the files. */
  startedAt: number;
  /**
   * Optional: the server's name (what the client dialled; the server's own
   * --name). Recorded so verify can match it against the server certificate.
   */
  serverName?: string;
  /** Wire protocol version negotiated; defaults to lib/wire PROTOCOL_VERSION. */
  protocolVersion?: number;
  /** Also write `<base>.keys` with each line's content key (the client, TRANSCRIPT §6). */
  keepKeys?: boolean;
}

export interface FinishResult {
  receiptPath: string;
  peerReceiptPath?: string;
}

function ioError(what: string, cause: unknown): SecureChatError {
  const detail = cause instanceof Error ? `: ${cause.message}` : "";
  return new SecureChatError("TRANSCRIPT_IO", `${what}${detail}`, {
    cause,
    hint: "check that the --transcripts directory exists, is writable and the disk is not full",
  });
}

/**
 * Writers with lines not yet written, and the one timer that writes them all at the end of
 * the turn: a server relaying one line to many sessions appends to each of their writers,
 * and a timer per writer per turn cost more than the writes.
 */
const unflushed = new Set<{ flush(): void }>();
/** Where a batch of lines is laid out to be written: one buffer, reused (kept up to 256 KiB). */
const linesScratch = new ScratchBytes(256 * 1024);
const NEWLINE = 0x0a;
let flushAllTimer: ReturnType<typeof setTimeout> | undefined;

function flushAll(): void {
  turnBegan(); // a timer: a turn of its own (lib/turn.ts)
  flushAllTimer = undefined;
  for (const writer of unflushed) writer.flush();
}

export class TranscriptWriter {
  /** Path of the `.log` file. */
  readonly path: string;
  /** Path without `.log`: receipts go to `<base>.receipt.json` and `<base>.peer-receipt.json`. */
  readonly basePath: string;
  readonly header: Readonly<TranscriptHeader>;
  readonly #hasher: TranscriptHasher;
  readonly #fingerprints: { client: string; server: string };
  readonly #lastTs: Record<Direction, number> = { c2s: -1, s2c: -1 };
  readonly #storage: TranscriptStorage;
  readonly #log: AppendSink;
  #keys: AppendSink | null = null;
  /**
   * Lines appended and not written (nor hashed) yet: laid out once, when the batch goes, into
   * one buffer all writers share.
   */
  #pending: PreparedLine[] = [];
  /** The seqno the next line of each direction must have. */
  readonly #next: Record<Direction, number> = { c2s: 1, s2c: 1 };
  #pendingKeys: string[] = [];
  /** What flushAll() calls: this writer's batch goes out. */
  readonly #batch = { flush: () => this.#flush() };
  #failed: SecureChatError | null = null;
  #closed = false;

  private constructor(
    path: string,
    basePath: string,
    header: TranscriptHeader,
    storage: TranscriptStorage,
    log: AppendSink,
    hasher: TranscriptHasher,
    fingerprints: { client: string; server: string },
  ) {
    this.path = path;
    this.basePath = basePath;
    this.header = header;
    this.#storage = storage;
    this.#log = log;
    this.#hasher = hasher;
    this.#fingerprints = fingerprints;
  }

  /**
   * Creates `<dir>/<base>.log` (mode 0600; `dir` is created with mode 0700) and
   * writes the header line.
   * @throws TRANSCRIPT_IO if the directory or file cannot be created or written
   */
  static async create(
    storage: TranscriptStorage,
    header: TranscriptHeader,
  ): Promise<TranscriptWriter> {
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
      sessionTime: header.sessionTime,
      clientFingerprint: fingerprints.client,
      serverFingerprint: fingerprints.server,
    });
    try {
      await storage.prepare();
    } catch (cause) {
      throw ioError(`cannot create transcript directory ${storage.location}`, cause);
    }
    const basePath = storage.pathOf(baseNameOf(header.sessionId, header.role, header.startedAt));
    const path = `${basePath}.log`;
    let log: AppendSink;
    try {
      log = await storage.createAppendOnly(path);
    } catch (cause) {
      throw ioError(`cannot create transcript ${path}`, cause);
    }
    const writer = new TranscriptWriter(
      path,
      basePath,
      { ...header, protocolVersion },
      storage,
      log,
      hasher,
      fingerprints,
    );
    try {
      log.append(utf8(encodeHeaderLine({ ...header, protocolVersion }) + "\n"));
      if (header.keepKeys) writer.#keys = await storage.createAppendOnly(`${basePath}.keys`);
    } catch (cause) {
      await writer.#closeFiles().catch(() => {});
      throw ioError(`cannot write transcript ${path}`, cause);
    }
    return writer;
  }

  /** Messages recorded so far per direction. */
  get counts(): Readonly<Record<Direction, number>> {
    return { c2s: this.#next.c2s - 1, s2c: this.#next.s2c - 1 };
  }

  /** The transcript hash over everything recorded so far (the pending batch is written first). */
  currentHash(): HashState {
    this.#flush();
    return this.#hasher.current();
  }

  /**
   * Records one session message. Per direction, its (first) seqno must be the next one (1, 2,
   * ...) and its ts must not decrease: anything else is PROTOCOL_ERROR and nothing is recorded. A
   * user's msg of several records takes their seqnos (TRANSCRIPT §2.2: `seqno` … `lastSeqno`,
   * consecutive and their ts in order, as its schema and the session checked them). The line is
   * hashed and written with the current batch.
   * @throws TRANSCRIPT_IO once a write failed; PROTOCOL_ERROR as above
   */
  append(line: PreparedLine): void {
    if (this.#failed) throw this.#failed;
    if (this.#closed) throw new SecureChatError("TRANSCRIPT_IO", "transcript already closed");
    const { dir, seqno, ts } = line;
    const expected = this.#next[dir];
    if (seqno !== expected) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        `transcript: ${dir} seqno ${seqno} is not the next one (${expected})`,
      );
    }
    if (!Number.isSafeInteger(ts) || ts < this.#lastTs[dir]) {
      throw new SecureChatError("PROTOCOL_ERROR", `transcript: ${dir} timestamp went backwards`);
    }
    this.#next[dir] = (line.lastSeqno ?? seqno) + 1;
    this.#lastTs[dir] = line.lastTs ?? ts;
    if (this.#pending.push(line) === 1) {
      unflushed.add(this.#batch);
      flushAllTimer ??= setTimeout(flushAll, 0);
    }
    if (this.#keys !== null) {
      if (line.k) {
        this.#pendingKeys.push(`{"dir":"${dir}","seqno":${seqno},"k":"${toBase64(line.k)}"}`);
      }
      // A group's records (TRANSCRIPT §6): a user's msg's by their own seqnos (consecutive from
      // the line's), a relay's by their place from 1 (`--reveal N:J`).
      line.itemKeys?.forEach((k, j) => {
        if (!k) return;
        this.#pendingKeys.push(
          dir === "c2s"
            ? `{"dir":"c2s","seqno":${seqno + j},"k":"${toBase64(k)}"}`
            : `{"dir":"${dir}","seqno":${seqno},"item":${j + 1},"k":"${toBase64(k)}"}`,
        );
      });
    }
  }

  /**
   * Writes the pending batch now. A session calls it before it acts on (relays, shows)
   * the messages it received: they are on disk first, and if they cannot be written
   * none of them is acted on.
   * @throws TRANSCRIPT_IO
   */
  commit(): void {
    this.#flush();
    if (this.#failed) throw this.#failed;
  }

  /**
   * Writes the pending batch now, and adds it to the transcript hash. A failure is kept and
   * thrown by the next append or finish.
   */
  #flush(): void {
    unflushed.delete(this.#batch);
    if (unflushed.size === 0) {
      clearTimeout(flushAllTimer);
      flushAllTimer = undefined;
    }
    const pending = this.#pending;
    if (pending.length === 0 || this.#failed) return;
    this.#pending = [];
    this.#hasher.addAll(pending);
    try {
      linesScratch.use((out) => {
        for (const line of pending) {
          line.writeJson(out);
          out.u8(NEWLINE);
        }
        this.#log.append(out.done()); // a sink keeps no view of what it is given
      });
      if (this.#pendingKeys.length > 0 && this.#keys) {
        this.#keys.append(utf8(this.#pendingKeys.join("\n") + "\n"));
        this.#pendingKeys = [];
      }
    } catch (cause) {
      this.#failed = ioError(`cannot append to transcript ${this.path}`, cause);
    }
  }

  /**
   * Makes every line appended so far durable (written and fsynced): what a client does before
   * it tells the server it holds its stored lines (PROTOCOL §6.6).
   * @throws TRANSCRIPT_IO
   */
  async sync(): Promise<void> {
    this.#flush();
    if (this.#failed) throw this.#failed;
    try {
      for (const sink of [this.#log, this.#keys]) await sink?.sync();
    } catch (cause) {
      throw ioError(`cannot sync transcript ${this.path}`, cause);
    }
  }

  async #closeFiles(): Promise<void> {
    this.#flush();
    const keys = this.#keys;
    this.#keys = null;
    try {
      await this.#log.close();
    } finally {
      await keys?.close();
    }
  }

  /** Own receipt over the hash of everything appended (waits for pending appends). */
  async createReceipt(signer: SigningKey): Promise<Receipt> {
    this.#flush();
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
    this.#flush();
    if (this.#failed) throw this.#failed;
    const parsed = parseReceipt(receipt);
    const peerRole = this.header.role === "client" ? "server" : "client";
    const headerPeer = peerRole === "client"
      ? this.header.clientCertDer
      : this.header.serverCertDer;
    if (!timingSafeEqual(peerCertDer, headerPeer)) {
      throw new SecureChatError("BAD_CERT", "receipt checked against a certificate not in session");
    }
    if (parsed.signer_role !== peerRole) {
      throw new SecureChatError(
        "TAMPERED",
        `peer receipt says it is from the ${parsed.signer_role}`,
      );
    }
    const state = this.#hasher.current();
    if (parsed.c2s_count !== state.c2s || parsed.s2c_count !== state.s2c) {
      throw new SecureChatError(
        "TAMPERED",
        `peer receipt covers c2s 1..${parsed.c2s_count}, s2c 1..${parsed.s2c_count}; ` +
          `we recorded c2s 1..${state.c2s}, s2c 1..${state.s2c}`,
      );
    }
    await checkReceipt(parsed, this.#expectation(peerRole, peerCertDer));
    return parsed;
  }

  #expectation(role: "client" | "server", certDer: Uint8Array) {
    const key = lazyKey(spkiOfCertificate(certDer));
    const unusable = () => Promise.reject(new SecureChatError("INTERNAL", "unused key"));
    const state = this.#hasher.current();
    return {
      sessionId: this.header.sessionId,
      counts: { c2s: state.c2s, s2c: state.s2c },
      stateAt: () => state,
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
    this.#flush();
    if (this.#failed) throw this.#failed;
    if (this.#closed) throw new SecureChatError("TRANSCRIPT_IO", "transcript already closed");
    const receiptPath = `${this.basePath}.receipt.json`;
    const peerReceiptPath = peer ? `${this.basePath}.peer-receipt.json` : undefined;
    try {
      await this.#closeLog();
      await this.#storage.writeNew(receiptPath, encodeReceiptFile(own));
      if (peer && peerReceiptPath) {
        await this.#storage.writeNew(peerReceiptPath, encodeReceiptFile(peer));
      }
      await this.#storage.syncNames();
    } catch (cause) {
      if (cause instanceof SecureChatError) throw cause;
      throw ioError(`cannot finish transcript ${this.path}`, cause);
    }
    return peerReceiptPath ? { receiptPath, peerReceiptPath } : { receiptPath };
  }

  /** Closes without receipts (a cut-off session): the log ends at its last whole line. */
  async abort(): Promise<void> {
    this.#flush();
    if (this.#closed) return;
    try {
      await this.#closeLog();
    } catch (cause) {
      throw ioError(`cannot close transcript ${this.path}`, cause);
    }
  }

  async #closeLog(): Promise<void> {
    this.#closed = true;
    await this.#closeFiles();
  }
}
