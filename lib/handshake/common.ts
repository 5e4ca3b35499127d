/**
 * What both handshake roles share: one message in or out at a time, each added to
 * the handshake transcript exactly as it travelled (PROTOCOL §3, §4).
 */
import type { z } from "zod";
import { timingSafeEqual, toBase64, utf8 } from "../bytes.ts";
import { generateKeyShare, type KexGroup, type KeyShare } from "../crypto/kex.ts";
import { sign, type SigningKey, verify, type VerifyingKey } from "../crypto/signature.ts";
import { isErrorCode, SecureChatError } from "../errors.ts";
import type { ValidatedPeer } from "../pki/validate.ts";
import type { FrameConnection } from "../wire/connection.ts";
import {
  CertificateVerifySchema,
  FinishedSchema,
  parseMessage,
  peerErrorOf,
  SealedSchema,
} from "../wire/messages.ts";
import { finishedMac, HandshakeTranscript, type Role, signatureInput } from "./key_schedule.ts";
import type { SealedChannel } from "./record.ts";

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/** A party's long-term credential: its certificate and the key that signs for it. */
export interface Identity {
  certDer: Uint8Array;
  signingKey: SigningKey;
}

/** Where the handshake gets randomness; tests replace it to replay the vectors of PROTOCOL §9. */
export interface HandshakeRandomness {
  nonce(): Uint8Array;
  keyShare(group: KexGroup): Promise<KeyShare>;
}

export const systemRandomness: HandshakeRandomness = {
  nonce: () => crypto.getRandomValues(new Uint8Array(32)),
  keyShare: generateKeyShare,
};

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
 * One side's view of the handshake messages: every read has the handshake's
 * remaining time as its deadline; every message is added to the transcript.
 */
export class HandshakeIo {
  readonly transcript = new HandshakeTranscript();
  #deadline: number;
  sealed: SealedChannel | null = null;

  constructor(readonly conn: FrameConnection, timeoutMs: number) {
    this.#deadline = Date.now() + timeoutMs;
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
    throwIfPeerError(payload);
    return payload;
  }

  /** Reads a plaintext message of the given schema. */
  async readPlain<S extends z.ZodTypeAny>(schema: S, record = true): Promise<z.output<S>> {
    const payload = await this.#readPayload();
    const message = parseMessage(payload, schema);
    if (record) this.transcript.add(payload);
    return message;
  }

  /** Reads a sealed frame and returns its inner message, parsed with the given schema. */
  async readSealed<S extends z.ZodTypeAny>(schema: S, record = true): Promise<z.output<S>> {
    const payload = await this.#readPayload();
    const frame = parseMessage(payload, SealedSchema);
    const inner = await this.#channel().open(frame.ct);
    throwIfPeerError(inner);
    const message = parseMessage(inner, schema);
    if (record) this.transcript.add(inner);
    return message;
  }

  sendPlain(message: unknown, record = true): void {
    const payload = utf8(JSON.stringify(message));
    this.conn.send(payload);
    if (record) this.transcript.add(payload);
  }

  async sendSealed(message: unknown, record = true): Promise<void> {
    const inner = utf8(JSON.stringify(message));
    const ct = await this.#channel().seal(inner);
    this.conn.send(utf8(JSON.stringify({ type: "sealed", ct: toBase64(ct) })));
    if (record) this.transcript.add(inner);
  }

  /** Signs the transcript so far for `role` and `phase` and sends certificate_verify (§4.6). */
  async sendCertificateVerify(role: Role, phase: 1 | 2, key: SigningKey): Promise<void> {
    const sig = await sign(key, signatureInput(role, phase, await this.transcript.hash()));
    await this.sendSealed({ type: "certificate_verify", sig: toBase64(sig) });
  }

  /**
   * Reads the peer's certificate_verify and checks it over the transcript so far.
   * @throws SIG_FAIL
   */
  async readCertificateVerify(role: Role, phase: 1 | 2, key: VerifyingKey): Promise<void> {
    const signed = signatureInput(role, phase, await this.transcript.hash());
    const { sig } = await this.readSealed(CertificateVerifySchema);
    if (!await verify(key, signed, sig)) {
      throw new SecureChatError("SIG_FAIL", `${role} phase ${phase} signature does not verify`);
    }
  }

  /** Sends finished: the MAC over the transcript so far under our finished key (§4.6). */
  async sendFinished(finishedKey: Uint8Array): Promise<void> {
    const mac = await finishedMac(finishedKey, await this.transcript.hash());
    await this.sendSealed({ type: "finished", mac: toBase64(mac) });
  }

  /**
   * Reads the peer's finished and compares it in constant time.
   * @throws HANDSHAKE_FAIL
   */
  async readFinished(role: Role, finishedKey: Uint8Array): Promise<void> {
    const expected = await finishedMac(finishedKey, await this.transcript.hash());
    const { mac } = await this.readSealed(FinishedSchema);
    if (!timingSafeEqual(mac, expected)) {
      throw new SecureChatError("HANDSHAKE_FAIL", `${role} Finished does not match our keys`);
    }
  }

  /**
   * Phase 1 proof of identity (§5 server step 3, client step 6): our certificate,
   * our signature over the handshake so far, and our Finished.
   */
  async sendAuthentication(role: Role, identity: Identity, finishedKey: Uint8Array) {
    await this.sendSealed({ type: "certificate", cert: toBase64(identity.certDer) });
    await this.sendCertificateVerify(role, 1, identity.signingKey);
    await this.sendFinished(finishedKey);
  }

  /**
   * Tells the peer why we are closing, sealed when a channel exists (so a passive
   * observer learns nothing), and closes so that the message survives. Best effort:
   * the peer may be gone.
   */
  async sendError(error: SecureChatError): Promise<void> {
    const message = errorMessageFor(error);
    try {
      if (this.sealed) await this.sendSealed(message, false);
      else this.sendPlain(message, false);
    } catch {
      // the peer is gone; the local log still has the code
    }
    await this.conn.lingerClose();
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
function throwIfPeerError(payload: Uint8Array): void {
  const peerError = peerErrorOf(payload);
  if (peerError) throw errorFromPeer(peerError.code, peerError.message);
}

/** The local error for an `error` message the peer sent: its code, marked as the peer's. */
export function errorFromPeer(code: string, message?: string): SecureChatError {
  return new SecureChatError(
    isErrorCode(code) ? code : "PROTOCOL_ERROR",
    `peer ended the session: ${code.slice(0, 32)}${message ? ` (${message})` : ""}`,
    { cause: { fromPeer: true } },
  );
}

export function isFromPeer(error: unknown): boolean {
  return error instanceof SecureChatError &&
    (error.cause as { fromPeer?: boolean } | undefined)?.fromPeer === true;
}
