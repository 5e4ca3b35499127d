/**
 * An author's certificate once per recipient session (PROTOCOL §6.4.1, TRANSCRIPT §2.2): the
 * session's list of introduced certificates, which the server, the recipient and `verify` all
 * run the same way over the session's `relay` and `stored` messages, so that a relay can name
 * a certificate by fingerprint and the other end always knows which one.
 */
import { fingerprintOf } from "../pki/describe.ts";
import { toBase64 } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import type { AuthorCert } from "./record.ts";

/** The most certificates one session's list holds (PROTOCOL §6.4.1). */
export const SESSION_CERTS = 256;

/** The AuthorCert of a certificate in hand (a server's member, a stored or cluster relay). */
export function authorCertOf(der: Uint8Array, base64 = toBase64(der)): AuthorCert {
  return { fingerprint: fingerprintOf(der), cert: { base64, der } };
}

/**
 * Fingerprint → what the holder keeps for it, least recently used first. The server keeps
 * nothing but the name (`true`); a recipient the validated certificate; `verify` its bytes.
 */
export class SessionCertList<T> {
  readonly #held = new Map<string, T>();
  /**
   * The most recently used fingerprint: using it again changes no order, so a session sent one
   * author's relays in a row pays a lookup each, not a delete and an insert.
   */
  #newest?: string;

  constructor(readonly capacity = SESSION_CERTS) {}

  get size(): number {
    return this.#held.size;
  }

  has(fingerprint: string): boolean {
    return this.#held.has(fingerprint);
  }

  /** A relay names the certificate: its entry, now the most recently used; undefined if not held. */
  use(fingerprint: string): T | undefined {
    const entry = this.#held.get(fingerprint);
    if (entry === undefined || fingerprint === this.#newest) return entry;
    this.#held.delete(fingerprint);
    this.#held.set(fingerprint, entry);
    this.#newest = fingerprint;
    return entry;
  }

  /** A relay introduces it: appended, and the least recently used beyond the capacity dropped. */
  introduce(fingerprint: string, entry: T): void {
    this.#held.delete(fingerprint);
    this.#held.set(fingerprint, entry);
    this.#newest = fingerprint;
    if (this.#held.size > this.capacity) {
      this.#held.delete(this.#held.keys().next().value!);
    }
  }

  /**
   * The server's side of one relay or stored record: true when this one must introduce the
   * certificate (not held: it is then held), false when naming it is enough.
   */
  mustIntroduce(fingerprint: string, entry: T): boolean {
    if (this.use(fingerprint) !== undefined) return false;
    this.introduce(fingerprint, entry);
    return true;
  }

  /**
   * The receiving side of one relay or stored record (PROTOCOL §6.4 step 2): with `cert`, it
   * must be what `author_fp` names and not held yet, and `make` (the validation) becomes its
   * entry; without, `author_fp` must be held. The list changes before `make`'s result is
   * known: a session whose check fails ends, and the list with it.
   * @throws TAMPERED the name does not fit the bytes; PROTOCOL_ERROR introduced twice, or named
   *   and not held
   */
  admit(authorFp: string, cert: Uint8Array | undefined, make: (der: Uint8Array) => T): T {
    if (cert === undefined) {
      const entry = this.use(authorFp);
      if (entry === undefined) {
        throw new SecureChatError(
          "PROTOCOL_ERROR",
          `author certificate ${authorFp.slice(0, 16)}… is named but was not introduced earlier ` +
            `in this session (or was dropped: ${this.capacity} others were used since)`,
        );
      }
      return entry;
    }
    if (fingerprintOf(cert) !== authorFp) {
      throw new SecureChatError(
        "TAMPERED",
        `the certificate introduced is not the one its author_fp ${authorFp.slice(0, 16)}… names`,
      );
    }
    if (this.#held.has(authorFp)) {
      throw new SecureChatError(
        "PROTOCOL_ERROR",
        `author certificate ${authorFp.slice(0, 16)}… is introduced again in this session`,
      );
    }
    const entry = make(cert);
    this.introduce(authorFp, entry);
    return entry;
  }
}
