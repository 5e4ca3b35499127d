/**
 * What both handshake roles share: one message in or out at a time, each added to
 * the handshake transcript exactly as it travelled (PROTOCOL §3, §4).
 */
import type { z } from "zod";
import { timingSafeEqual, toBase64, toHex, utf8, wipe } from "../bytes.ts";
import type { KexGroup } from "../crypto/kex.ts";
import { sign, type SigningKey, verify, type VerifyingKey } from "../crypto/signature.ts";
import { isErrorCode, SecureChatError } from "../errors.ts";
import type { TrustStore, ValidatedPeer } from "../pki/validate.ts";
import type { FrameConnection } from "../wire/connection.ts";
import {
  CertificateVerifySchema,
  FinishedSchema,
  parseMessageOrPeerError,
  peerErrorOf,
} from "../wire/messages.ts";
import {
  deriveMaster,
  derivePhase1,
  deriveSession,
  finishedMac,
  HandshakeTranscript,
  type MasterSecrets,
  type Phase1Secrets,
  type Role,
  signatureInput,
} from "./key_schedule.ts";
import { RecordLayer } from "./record.ts";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * What a connection asks for per read during the handshake: its first frames are larger than
 * an idle connection's reads (IDLE_READ_BYTES, 1 KiB): the hello with the hybrid's share
 * (~2.4 KB), the server's flight (~3.7 KB with RSA-2048), the client's certificate flight
 * (~2.4 KB). Each then arrives in one read instead of a full 1 KiB read and a second one.
 */
export const HANDSHAKE_READ_BYTES = 4096;

/**
 * How long a side whose write failed waits for the `error` the peer sent before closing.
 * It is normally already received; the bound only covers a peer that closed without one.
 */
export const PEER_ERROR_GRACE_MS = 1000;

/** A party's long-term credential: its certificate and the key that signs for it. */
export interface Identity {
  certDer: Uint8Array;
  signingKey: SigningKey;
}

/**
 * Where the handshake gets randomness and time; tests replace it to replay the
 * vectors of PROTOCOL §9.
 */
export interface HandshakeRandomness {
  nonce(): Uint8Array;
  /** Fixed private key material for the next key share (see KeyAgreement), or undefined for fresh. */
  keyShareSecret(group: KexGroup): Uint8Array | undefined;
  now(): number;
}

export const systemRandomness: HandshakeRandomness = {
  nonce: () => crypto.getRandomValues(new Uint8Array(32)),
  keyShareSecret: () => undefined,
  now: () => Date.now(),
};

/** The clock skew a party tolerates (server_hello.time, session messages): 5 minutes. */
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;

/** What the client proves the user with, inside the phase 1 channel (never hashed). */
export type Credentials =
  & (
    | { mode: "login"; username: string; password: string }
    | { mode: "register"; username: string; password: string; email: string }
    /** A resumption ticket instead of the password (DEPLOY.md §8). */
    | { mode: "resume"; username: string; ticket: Uint8Array }
  )
  /** Ask the server for a resumption ticket in `auth_ok`. */
  & { wantTicket?: boolean };

/** What both roles are configured with. */
export interface HandshakeOptions {
  identity: Identity;
  trust: TrustStore;
  groups?: readonly KexGroup[];
  timeoutMs?: number;
  randomness?: HandshakeRandomness;
  maxSkewMs?: number;
}

/** The outcome of a completed handshake: everything the chat session needs. */
export interface EstablishedSession {
  role: Role;
  conn: FrameConnection;
  /** Both directions now under the application keys (PROTOCOL §4.2). */
  records: RecordLayer;
  sessionId: string;
  /** server_hello.time: the session time transcripts judge certificates at. */
  sessionTime: number;
  self: Identity;
  peer: ValidatedPeer;
  peerKey: VerifyingKey;
  /** The authenticated user name (the client certificate's CN). */
  username: string;
  group: KexGroup;
  /** Client side: the resumption ticket the server's `auth_ok` carried, if any. */
  ticket?: Uint8Array;
}

/**
 * Runs one side's steps. On a failure of our own, the peer is told the code before
 * the connection closes (a code the peer sent us is not echoed back); the handshake
 * secrets are wiped whatever happens. A write that failed because the peer refused us
 * and closed is reported with the peer's code: we pipeline several messages, so a write
 * can fail before we read the peer's `error`.
 */
export async function runHandshake(
  io: HandshakeIo,
  steps: () => Promise<EstablishedSession>,
): Promise<EstablishedSession> {
  try {
    return await steps();
  } catch (caught) {
    const error = caught !== null && caught === io.conn.writeError
      ? await io.readPendingPeerError() ?? caught
      : caught;
    if (error instanceof SecureChatError && !isFromPeer(error)) await io.sendError(error);
    throw error;
  } finally {
    io.wipe();
  }
}

/**
 * One side's view of the handshake: every read has the handshake's remaining time
 * as its deadline; every hashed message is added to the transcript; the key
 * schedule's state (PROTOCOL §4) lives here, oriented by our role.
 */
export class HandshakeIo {
  readonly transcript = new HandshakeTranscript();
  #deadline: number;
  #phase1?: Phase1Secrets;
  #phase2?: MasterSecrets;
  /** Set once a record from the peer opened: from then on no plaintext frame is accepted. */
  #peerSealed = false;
  records: RecordLayer | null = null;
  /** The frames of a flight being built (`beginFlight`), not yet handed to the connection. */
  #flight: Uint8Array[] | null = null;
  /** Where transport secrets go when an auditor asked for them (PROTOCOL §12.9); else nowhere. */
  keylog?: (label: string, secret: Uint8Array) => void;

  /** The connection's read size before the handshake, given back by `wipe` at its end. */
  readonly #quietReadBytes: number;

  constructor(readonly role: Role, readonly conn: FrameConnection, timeoutMs: number) {
    this.#deadline = Date.now() + timeoutMs;
    this.#quietReadBytes = conn.quietReadBytes;
    conn.quietReadBytes = HANDSHAKE_READ_BYTES;
  }

  /** After server_hello: handshake keys from ss1 and H(hello, server_hello) (§4.1). */
  enterPhase1(shared: Uint8Array): void {
    try {
      this.#phase1 = derivePhase1(shared, this.transcript.hash());
    } finally {
      wipe(shared);
    }
    this.keylog?.("HANDSHAKE_SECRET", this.#phase1.handshakeSecret);
    const { c2s, s2c } = this.#phase1;
    this.records = this.role === "client" ? new RecordLayer(c2s, s2c) : new RecordLayer(s2c, c2s);
  }

  /** After dh_server: the master secret from ss2 (§4.2). */
  enterPhase2(shared: Uint8Array): void {
    try {
      this.#phase2 = deriveMaster(this.#secrets().handshakeSecret, shared);
    } finally {
      wipe(shared);
    }
  }

  /**
   * The session secrets over Hfinal (the transcript so far, which must end with the
   * server's phase 2 finished).
   */
  deriveSession(): { sessionId: string; app: Record<"c2s" | "s2c", Uint8Array> } {
    const secrets = deriveSession(this.#master().master, this.transcript.hash());
    this.keylog?.("APP_TRAFFIC_C2S_0", secrets.app.c2s);
    this.keylog?.("APP_TRAFFIC_S2C_0", secrets.app.s2c);
    return { sessionId: toHex(secrets.sessionId), app: secrets.app };
  }

  /**
   * The session, once both directions are under the application keys: one record for both
   * roles, whose peer is the other side's validated certificate.
   */
  established(
    sessionId: string,
    parties: Pick<
      EstablishedSession,
      "sessionTime" | "self" | "peer" | "username" | "group" | "ticket"
    >,
  ): EstablishedSession {
    const records = this.records;
    if (!records) throw new SecureChatError("INTERNAL", "no record layer yet");
    return {
      role: this.role,
      conn: this.conn,
      records,
      sessionId,
      peerKey: parties.peer.key,
      ...parties,
    };
  }

  /**
   * Best effort (JS may keep copies): the handshake secrets are not needed after the handshake.
   * The connection reads as it did before the handshake again.
   */
  wipe(): void {
    this.conn.quietReadBytes = this.#quietReadBytes;
    const p = this.#phase1;
    if (p) wipe(p.handshakeSecret, p.clientFinishedKey, p.serverFinishedKey);
    const m = this.#phase2;
    if (m) wipe(m.master, m.clientFinishedKey, m.serverFinishedKey);
  }

  #secrets(): Phase1Secrets {
    if (!this.#phase1) throw new SecureChatError("INTERNAL", "no phase 1 keys yet");
    return this.#phase1;
  }

  #master(): MasterSecrets {
    if (!this.#phase2) throw new SecureChatError("INTERNAL", "no phase 2 keys yet");
    return this.#phase2;
  }

  #peerRole(): Role {
    return this.role === "client" ? "server" : "client";
  }

  #finishedKey(role: Role, phase: 1 | 2): Uint8Array {
    const p = phase === 1 ? this.#secrets() : this.#master();
    return role === "client" ? p.clientFinishedKey : p.serverFinishedKey;
  }

  async #readPayload(): Promise<Uint8Array> {
    const remaining = this.#deadline - Date.now();
    if (remaining <= 0) throw new SecureChatError("TIMEOUT", "handshake did not complete in time");
    const payload = await this.conn.read(remaining);
    if (payload === null) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        "peer closed the connection during the handshake",
      );
    }
    return payload;
  }

  /** Reads a plaintext message of the given schema (hello, server_hello). */
  async readPlain<S extends z.ZodTypeAny>(schema: S, record = true): Promise<z.output<S>> {
    const { message, payload } = await this.readPlainBytes(schema);
    if (record) this.transcript.add(payload);
    return message;
  }

  /** Reads a plaintext message and its bytes, unrecorded: the caller adds it when it counts. */
  async readPlainBytes<S extends z.ZodTypeAny>(
    schema: S,
  ): Promise<{ message: z.output<S>; payload: Uint8Array }> {
    const payload = await this.#readPayload();
    return { message: messageOrPeerError(payload, schema, false), payload };
  }

  /** Reads one record and returns its message, parsed with the given schema. */
  async readSealed<S extends z.ZodTypeAny>(schema: S, hashed = true): Promise<z.output<S>> {
    const payload = await this.#readPayload();
    let content: Uint8Array;
    try {
      content = this.#records().open(payload);
    } catch (error) {
      // A peer that never had our keys can only refuse in plaintext (PROTOCOL §3.3).
      if (!this.#peerSealed) throwIfPeerError(payload, false);
      throw error;
    }
    this.#peerSealed = true;
    const message = messageOrPeerError(content, schema, true);
    if (hashed) this.transcript.add(content);
    return message;
  }

  /**
   * From now until `endFlight`, what we send is held and then handed to the connection in one
   * turn, so it leaves in one write: the server's server_hello … finished would otherwise go
   * as four writes (the connection writes what was queued before each await, and the
   * signature is awaited), each a syscall and a segment for both sides to handle.
   */
  beginFlight(): void {
    this.#flight ??= [];
  }

  /** Sends the held flight (records were sealed in order as they were made). */
  endFlight(): void {
    const flight = this.#flight;
    this.#flight = null;
    for (const payload of flight ?? []) this.conn.send(payload);
  }

  #send(payload: Uint8Array): void {
    if (this.#flight) this.#flight.push(payload);
    else this.conn.send(payload);
  }

  /** Sends a plaintext message; returns its bytes (for a caller that records it later). */
  sendPlain(message: unknown, record = true): Uint8Array {
    const payload = utf8(JSON.stringify(message));
    this.#send(payload);
    if (record) this.transcript.add(payload);
    return payload;
  }

  sendSealed(message: unknown, hashed = true): void {
    const content = utf8(JSON.stringify(message));
    this.#send(this.#records().seal(content));
    if (hashed) this.transcript.add(content);
  }

  /** Signs the transcript so far for our role and sends certificate_verify (§4.6). */
  async sendCertificateVerify(key: SigningKey): Promise<void> {
    const sig = await sign(key, signatureInput(this.role, this.transcript.hash()));
    this.sendSealed({ type: "certificate_verify", sig: toBase64(sig) });
  }

  /**
   * Reads the peer's certificate_verify and checks it over the transcript so far.
   * @throws SIG_FAIL
   */
  async readCertificateVerify(key: VerifyingKey): Promise<void> {
    const role = this.#peerRole();
    const signed = signatureInput(role, this.transcript.hash());
    const { sig } = await this.readSealed(CertificateVerifySchema);
    if (!await verify(key, signed, sig)) {
      throw new SecureChatError("SIG_FAIL", `${role} handshake signature does not verify`);
    }
  }

  /** Sends finished: the MAC over the transcript so far under our key of `phase` (§4.6). */
  sendFinished(phase: 1 | 2): void {
    const mac = finishedMac(this.#finishedKey(this.role, phase), this.transcript.hash());
    this.sendSealed({ type: "finished", mac: toBase64(mac) });
  }

  /**
   * Reads the peer's finished of `phase` and compares it in constant time.
   * @throws HANDSHAKE_FAIL
   */
  async readFinished(phase: 1 | 2): Promise<void> {
    const role = this.#peerRole();
    const expected = finishedMac(this.#finishedKey(role, phase), this.transcript.hash());
    const { mac } = await this.readSealed(FinishedSchema);
    if (!timingSafeEqual(mac, expected)) {
      throw new SecureChatError(
        "HANDSHAKE_FAIL",
        `${role} phase ${phase} Finished does not match our keys`,
      );
    }
  }

  /**
   * Phase 1 proof of identity (§5 server step 3, client step 6): our certificate,
   * our signature over the handshake so far, and our Finished.
   */
  async sendAuthentication(identity: Identity) {
    this.sendSealed({ type: "certificate", cert: toBase64(identity.certDer) });
    await this.sendCertificateVerify(identity.signingKey);
    this.sendFinished(1);
  }

  /**
   * Tells the peer why we are closing, sealed under our current sending key when we
   * have one (the peer reads under that same key, §5), and closes so that the
   * message survives. Best effort: the peer may be gone.
   */
  async sendError(error: SecureChatError): Promise<void> {
    const message = errorMessageFor(error);
    try {
      // A flight cut short goes first: its server_hello is what lets the peer open the error.
      this.endFlight();
      const payload = utf8(JSON.stringify(message));
      this.conn.send(this.records ? this.records.seal(payload) : payload);
    } catch {
      // the peer is gone; the local log still has the code
    }
    await this.conn.lingerClose();
  }

  /**
   * After a failed write: the peer's `error` (sealed under the key we read with, or in
   * plaintext while no record of the peer has opened, PROTOCOL §3.3) among the frames it
   * sent before closing, read for at most PEER_ERROR_GRACE_MS and within the handshake's
   * deadline; undefined when there is none.
   */
  async readPendingPeerError(): Promise<SecureChatError | undefined> {
    const deadline = Math.min(this.#deadline, Date.now() + PEER_ERROR_GRACE_MS);
    try {
      while (deadline > Date.now()) {
        const payload = await this.conn.read(deadline - Date.now());
        if (payload === null) return undefined;
        let content: Uint8Array | undefined;
        try {
          content = this.records?.open(payload);
        } catch {
          if (this.#peerSealed) return undefined;
        }
        const error = peerErrorOf(content ?? payload);
        if (error) return errorFromPeer(error.code, error.message, content !== undefined);
      }
    } catch {
      // a reset or a timeout: there is no error to report
    }
    return undefined;
  }

  #records(): RecordLayer {
    if (!this.records) throw new SecureChatError("INTERNAL", "no record keys yet");
    return this.records;
  }
}

/**
 * Codes whose human message helps the user and reveals nothing the code does not.
 * CLUSTER_UNAVAILABLE's names the record whose fate is open (PROTOCOL §6.5).
 */
const EXPLAINED_CODES = new Set([
  "INVALID_INPUT",
  "USER_EXISTS",
  "UNSUPPORTED",
  "RATE_LIMITED",
  "CLUSTER_UNAVAILABLE",
]);

/** The `error` message for a local failure: the code, and the text only where it is safe. */
export function errorMessageFor(
  error: SecureChatError,
): { type: "error"; code: string; message?: string } {
  return EXPLAINED_CODES.has(error.code)
    ? { type: "error", code: error.code, message: error.message.slice(0, 256) }
    : { type: "error", code: error.code };
}

/** An `error` message from the peer ends the handshake with the peer's code. */
function throwIfPeerError(payload: Uint8Array, authenticated: boolean): void {
  const peerError = peerErrorOf(payload);
  if (peerError) throw errorFromPeer(peerError.code, peerError.message, authenticated);
}

/**
 * The message of `schema` in `payload`; an `error` message from the peer instead ends the
 * handshake with the peer's code.
 */
function messageOrPeerError<S extends z.ZodTypeAny>(
  payload: Uint8Array,
  schema: S,
  authenticated: boolean,
): z.output<S> {
  const { message, peerError } = parseMessageOrPeerError(payload, schema);
  if (peerError) throw errorFromPeer(peerError.code, peerError.message, authenticated);
  return message;
}

/**
 * The local error for an `error` message the peer sent: its code, marked as the peer's.
 * A plaintext `error` (`authenticated` false) may come from anyone on the path, so its
 * text is dropped and the error says so: only the code is kept (PROTOCOL §8.1).
 */
export function errorFromPeer(
  code: string,
  message: string | undefined,
  authenticated: boolean,
): SecureChatError {
  const shownCode = code.slice(0, 32);
  const detail = authenticated
    ? message
    : "an unauthenticated plaintext error: anyone on the network path could have sent it, " +
      "so its text is not shown";
  const text = `peer ended the session: ${shownCode}${detail ? ` (${detail})` : ""}`;
  return new SecureChatError(isErrorCode(code) ? code : "PROTOCOL_ERROR", text, {
    cause: peerCause(authenticated),
  });
}

/**
 * The cause that marks an error's code as the peer's (its `error` message), for an error made
 * again from one (a session's end, told to the user): advice then speaks of the peer's refusal,
 * not of a check of ours.
 */
export function peerCause(authenticated: boolean): { fromPeer: true; authenticated: boolean } {
  return { fromPeer: true, authenticated };
}

export function isFromPeer(error: unknown): boolean {
  return error instanceof SecureChatError &&
    (error.cause as { fromPeer?: boolean } | undefined)?.fromPeer === true;
}
