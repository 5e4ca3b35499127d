/**
 * Sender keys for the lobby (PROTOCOL §12.5), after Signal's sender-key design: each
 * author has one chain per lobby membership; its chain key goes to every member once,
 * pairwise through their Double Ratchet, and each lobby record then costs the author one
 * chain step and one 48-byte wrap whatever the lobby's size. A new chain (new random
 * chain key, new id) is started on every membership change, so a member who left never
 * gets the key for what follows, and a newcomer gets only the current chain's key at its
 * current position, never the keys for what came before.
 *
 * Authorship does not rest on the chain (every member holds it): the author's certificate
 * signature over the record's commitment does that (§6.1), and the wrap is bound to the
 * record, so a member who holds the chain can neither forge nor re-attribute a record.
 */

import { concat, fromBase64, randomBytes, toBase64, u32be, utf8, wipe } from "../bytes.ts";
import { SecureChatError } from "../errors.ts";
import { type SenderKeyDistributionJson, SenderKeyDistributionJsonSchema } from "./envelope.ts";
import { chainStep, MAX_SKIP, MAX_STORED_SKIPPED } from "./chain.ts";
import { BINDING_BYTES } from "./ratchet.ts";
import { E2E_KEY_BYTES, unwrapContentKey, wrapContentKey } from "./wrap.ts";

const WRAP_LABEL = utf8("securechat/e2e sender key\0");

/** What an author sends each member, inside their ratchet: the chain at its current step. */
export interface SenderKeyDistribution {
  id: number;
  n: number;
  ck: Uint8Array;
}

export function encodeDistribution(d: SenderKeyDistribution): SenderKeyDistributionJson {
  return { id: d.id, n: d.n, ck: toBase64(d.ck) };
}

/** @throws PROTOCOL_ERROR */
export function parseDistribution(value: unknown): SenderKeyDistribution {
  const parsed = SenderKeyDistributionJsonSchema.safeParse(value);
  if (!parsed.success) throw new SecureChatError("PROTOCOL_ERROR", "malformed sender key");
  return { id: parsed.data.id, n: parsed.data.n, ck: fromBase64(parsed.data.ck) };
}

function wrapAad(author: string, id: number, n: number, binding: Uint8Array): Uint8Array {
  if (binding.length !== BINDING_BYTES) throw new RangeError("binding is 32 bytes");
  const name = utf8(author);
  return concat(WRAP_LABEL, u32be(name.length), name, u32be(id), u32be(n), binding);
}

/** The author's side: one chain, replaced by {@link SenderChain.fresh} on every membership change. */
export class SenderChain {
  readonly author: string;
  readonly id: number;
  #ck: Uint8Array;
  #n: number;

  constructor(author: string, id: number, ck: Uint8Array, n = 0) {
    if (ck.length !== E2E_KEY_BYTES) throw new RangeError("chain key is 32 bytes");
    this.author = author;
    this.id = id;
    this.#ck = ck.slice(); // ours to wipe as the chain moves
    this.#n = n;
  }

  /** A new chain with a random key and a random id (ids only tell chains apart). */
  static fresh(author: string): SenderChain {
    const id = new DataView(randomBytes(4).buffer).getUint32(0);
    return new SenderChain(author, id, randomBytes(E2E_KEY_BYTES));
  }

  /** The position of the next wrap. */
  get position(): number {
    return this.#n;
  }

  /** The chain as a member must receive it: from the next message on. */
  distribution(): SenderKeyDistribution {
    return { id: this.id, n: this.#n, ck: this.#ck.slice() };
  }

  /** Wraps a content key for the next lobby record. */
  encrypt(k: Uint8Array, binding: Uint8Array): { id: number; n: number; wrapped: Uint8Array } {
    const { mk, next } = chainStep(this.#ck);
    const n = this.#n;
    const wrapped = wrapContentKey(mk, wrapAad(this.author, this.id, n, binding), k);
    wipe(mk, this.#ck); // best-effort in JS
    this.#ck = next;
    this.#n += 1;
    return { id: this.id, n, wrapped };
  }
}

/** A member's copy of one author's chain. */
export class SenderKeyReceiver {
  readonly author: string;
  readonly id: number;
  #ck: Uint8Array;
  #n: number;
  #skipped = new Map<number, Uint8Array>();

  constructor(author: string, d: SenderKeyDistribution) {
    this.author = author;
    this.id = d.id;
    this.#ck = d.ck.slice();
    this.#n = d.n;
  }

  /**
   * Opens a lobby record's content key; the chain moves only if it opens.
   * @throws DECRYPT_FAIL (another chain, altered, or before this member's first key: a
   *   message from before it joined); REPLAY (already opened); PROTOCOL_ERROR (too far ahead)
   */
  decrypt(id: number, n: number, wrapped: Uint8Array, binding: Uint8Array): Uint8Array {
    if (id !== this.id) {
      throw new SecureChatError("DECRYPT_FAIL", "lobby record under a sender key we do not hold");
    }
    const aad = wrapAad(this.author, id, n, binding);
    const stored = this.#skipped.get(n);
    if (stored !== undefined) {
      const k = unwrapContentKey(stored, aad, wrapped);
      this.#skipped.delete(n);
      wipe(stored);
      return k;
    }
    if (n < this.#n) {
      throw new SecureChatError("REPLAY", "lobby record already opened or older than our key");
    }
    if (n - this.#n > MAX_SKIP) {
      throw new SecureChatError("PROTOCOL_ERROR", "too many skipped lobby records");
    }
    let ck = this.#ck;
    const skipped: [number, Uint8Array][] = [];
    for (let i = this.#n; i < n; i++) {
      const step = chainStep(ck);
      skipped.push([i, step.mk]);
      ck = step.next;
    }
    const { mk, next } = chainStep(ck);
    const k = unwrapContentKey(mk, aad, wrapped); // throws before anything is committed
    wipe(mk);
    for (const [i, key] of skipped) this.#skipped.set(i, key);
    while (this.#skipped.size > MAX_STORED_SKIPPED) {
      this.#skipped.delete(this.#skipped.keys().next().value!);
    }
    this.#ck = next;
    this.#n = n + 1;
    return k;
  }
}
