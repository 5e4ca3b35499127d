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
  parseMessage,
  peerErrorOf,
  SealedSchema,
} from "../wire/messages.ts";
import {
  derivePhase1,
  deriveSession,
  finishedMac,
  HandshakeTranscript,
  type Phase1Secrets,
  type Role,
  signatureInput,
} from "./key_schedule.ts";
import { SealedChannel } from "./record.ts";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

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

/** Where the handshake gets randomness; tests replace it to replay the vectors of PROTOCOL §9. */
export interface HandshakeRandomness {
  nonce(): Uint8Array;
  /** Fixed private key material for the next key share (see KeyAgreement), or undefined for fresh. */
  keyShareSecret(group: KexGroup): Uint8Array | undefined;
}

export const systemRandomness: HandshakeRandomness = {
  nonce: () => crypto.getRandomValues(new Uint8Array(32)),
  keyShareSecret: () => undefined,
};

/** What the client proves the user with, inside the phase 1 channel (never hashed). */
export type Credentials =
  | { mode: "login"; username: string; password: string }
  | { mode: "register"; username: string; password: string; email: string };

/** What both roles are configured with. */
export interface HandshakeOptions {
  identity: Identity;
  trust: TrustStore;
  groups?: readonly KexGroup[];
  timeoutMs?: number;
  randomness?: HandshakeRandomness;
}

/** The outcome of a completed handshake: everything the chat session needs. */
export interface EstablishedSession {
  role: Role;
  conn: FrameConnection;
  /** The sealed channel under the phase 2 control keys (close, receipts, errors). */
  control: SealedChannel;
  sessionId: string;
  chatSendSecret: Uint8Array;
  chatReceiveSecret: Uint8Array;
  self: Identity;
  peer: ValidatedPeer;
  peerKey: VerifyingKey;
  /** The authenticated user name (the client certificate's CN). */
  username: string;
  group: KexGroup;
}

/**
 * Runs one side's steps. On a failure of our own, the peer is told the code before
 * the connection closes (a code the peer sent us is not echoed back); the phase 1
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
 * as its deadline; every message is added to the transcript; the key schedule's
 * state (PROTOCOL §4) lives here, oriented by our role.
 */
export class HandshakeIo {
  readonly transcript = new HandshakeTranscript();
  #deadline: number;
  #phase1?: Phase1Secrets;
  #peerOnControlKeys = false;
  sealed: SealedChannel | null = null;

  constructor(readonly role: Role, readonly conn: FrameConnection, timeoutMs: number) {
    this.#deadline = Date.now() + timeoutMs;
  }

  /** After server_hello: phase 1 keys from ss1 and H(hello, server_hello) (§4.1). */
  async enterPhase1(shared: Uint8Array): Promise<void> {
    try {
      this.#phase1 = await derivePhase1(shared, await this.transcript.hash());
    } finally {
      wipe(shared);
    }
    const { c2s, s2c } = this.#phase1;
    this.sealed = this.role === "client"
      ? await SealedChannel.create(c2s, s2c)
      : await SealedChannel.create(s2c, c2s);
  }

  /** After the last phase 2 message: the session, from ss2 and Hfinal (§4.2). */
  async establish(
    shared: Uint8Array,
    parties: Pick<EstablishedSession, "self" | "peer" | "username" | "group">,
  ): Promise<EstablishedSession> {
    try {
      const secrets = await deriveSession(
        this.#secrets().handshakeSecret,
        shared,
        await this.transcript.hash(),
      );
      const [send, receive] = this.role === "client"
        ? ["c2s", "s2c"] as const
        : ["s2c", "c2s"] as const;
      return {
        role: this.role,
        conn: this.conn,
        control: await SealedChannel.create(secrets.control[send], secrets.control[receive]),
        sessionId: toHex(secrets.sessionId),
        chatSendSecret: secrets.chat[send],
        chatReceiveSecret: secrets.chat[receive],
        peerKey: parties.peer.key,
        ...parties,
      };
    } finally {
      wipe(shared);
    }
  }

  /**
   * The client's phase 2 certificate_verify is out: the server now reads under the
   * control keys, which the client cannot derive before dh_server. An error from here
   * on goes in a plaintext frame (PROTOCOL §3.2).
   */
  peerSwitchedToControlKeys(): void {
    this.#peerOnControlKeys = true;
  }

  /** Best effort (JS may keep copies): the phase 1 secrets are not needed after the handshake. */
  wipe(): void {
    const p = this.#phase1;
    if (p) wipe(p.handshakeSecret, p.clientFinishedKey, p.serverFinishedKey);
  }

  #secrets(): Phase1Secrets {
    if (!this.#phase1) throw new SecureChatError("INTERNAL", "no phase 1 keys yet");
    return this.#phase1;
  }

  #peerRole(): Role {
    return this.role === "client" ? "server" : "client";
  }

  #finishedKey(role: Role): Uint8Array {
    const p = this.#secrets();
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
    throwIfPeerError(payload, false);
    return payload;
  }

  /** Reads a plaintext message of the given schema. */
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
    return { message: parseMessage(payload, schema), payload };
  }

  /** Reads a sealed frame and returns its inner message, parsed with the given schema. */
  async readSealed<S extends z.ZodTypeAny>(schema: S, record = true): Promise<z.output<S>> {
    const payload = await this.#readPayload();
    const frame = parseMessage(payload, SealedSchema);
    const inner = await this.#channel().open(frame.ct);
    throwIfPeerError(inner, true);
    const message = parseMessage(inner, schema);
    if (record) this.transcript.add(inner);
    return message;
  }

  /** Sends a plaintext message; returns its bytes (for a caller that records it later). */
  sendPlain(message: unknown, record = true): Uint8Array {
    const payload = utf8(JSON.stringify(message));
    this.conn.send(payload);
    if (record) this.transcript.add(payload);
    return payload;
  }

  async sendSealed(message: unknown, record = true): Promise<void> {
    const inner = utf8(JSON.stringify(message));
    const ct = await this.#channel().seal(inner);
    this.conn.send(utf8(JSON.stringify({ type: "sealed", ct: toBase64(ct) })));
    if (record) this.transcript.add(inner);
  }

  /** Signs the transcript so far for our role and `phase` and sends certificate_verify (§4.6). */
  async sendCertificateVerify(phase: 1 | 2, key: SigningKey): Promise<void> {
    const sig = await sign(key, signatureInput(this.role, phase, await this.transcript.hash()));
    await this.sendSealed({ type: "certificate_verify", sig: toBase64(sig) });
  }

  /**
   * Reads the peer's certificate_verify and checks it over the transcript so far.
   * @throws SIG_FAIL
   */
  async readCertificateVerify(phase: 1 | 2, key: VerifyingKey): Promise<void> {
    const role = this.#peerRole();
    const signed = signatureInput(role, phase, await this.transcript.hash());
    const { sig } = await this.readSealed(CertificateVerifySchema);
    if (!await verify(key, signed, sig)) {
      throw new SecureChatError("SIG_FAIL", `${role} phase ${phase} signature does not verify`);
    }
  }

  /** Sends finished: the MAC over the transcript so far under our finished key (§4.6). */
  async sendFinished(): Promise<void> {
    const mac = await finishedMac(this.#finishedKey(this.role), await this.transcript.hash());
    await this.sendSealed({ type: "finished", mac: toBase64(mac) });
  }

  /**
   * Reads the peer's finished and compares it in constant time.
   * @throws HANDSHAKE_FAIL
   */
  async readFinished(): Promise<void> {
    const role = this.#peerRole();
    const expected = await finishedMac(this.#finishedKey(role), await this.transcript.hash());
    const { mac } = await this.readSealed(FinishedSchema);
    if (!timingSafeEqual(mac, expected)) {
      throw new SecureChatError("HANDSHAKE_FAIL", `${role} Finished does not match our keys`);
    }
  }

  /**
   * Phase 1 proof of identity (§5 server step 3, client step 6): our certificate,
   * our signature over the handshake so far, and our Finished.
   */
  async sendAuthentication(identity: Identity) {
    await this.sendSealed({ type: "certificate", cert: toBase64(identity.certDer) });
    await this.sendCertificateVerify(1, identity.signingKey);
    await this.sendFinished();
  }

  /**
   * Tells the peer why we are closing, sealed when a channel exists (so a passive
   * observer learns nothing), and closes so that the message survives. Best effort:
   * the peer may be gone.
   */
  async sendError(error: SecureChatError): Promise<void> {
    const message = errorMessageFor(error);
    try {
      if (this.sealed && !this.#peerOnControlKeys) await this.sendSealed(message, false);
      else this.sendPlain(message, false);
    } catch {
      // the peer is gone; the local log still has the code
    }
    await this.conn.lingerClose();
  }

  /**
   * After a failed write: the peer's `error` (plain, or sealed under the keys we read with)
   * among the frames it sent before closing, read for at most PEER_ERROR_GRACE_MS and
   * within the handshake's deadline; undefined when there is none.
   */
  async readPendingPeerError(): Promise<SecureChatError | undefined> {
    const deadline = Math.min(this.#deadline, Date.now() + PEER_ERROR_GRACE_MS);
    try {
      while (deadline > Date.now()) {
        const payload = await this.conn.read(deadline - Date.now());
        if (payload === null) return undefined;
        const plain = peerErrorOf(payload);
        if (plain) return errorFromPeer(plain.code, plain.message, false);
        if (this.sealed) {
          const inner = await this.sealed.open(parseMessage(payload, SealedSchema).ct);
          const sealed = peerErrorOf(inner);
          if (sealed) return errorFromPeer(sealed.code, sealed.message, true);
        }
      }
    } catch {
      // a reset, a timeout or a frame we cannot open: there is no error to report
    }
    return undefined;
  }

  #channel(): SealedChannel {
    if (!this.sealed) throw new SecureChatError("INTERNAL", "no sealed channel yet");
    return this.sealed;
  }
}

/** Codes whose human message helps the user and reveals nothing the code does not. */
const EXPLAINED_CODES = new Set(["INVALID_INPUT", "USER_EXISTS", "UNSUPPORTED", "RATE_LIMITED"]);

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
    cause: { fromPeer: true, authenticated },
  });
}

export function isFromPeer(error: unknown): boolean {
  return error instanceof SecureChatError &&
    (error.cause as { fromPeer?: boolean } | undefined)?.fromPeer === true;
}
