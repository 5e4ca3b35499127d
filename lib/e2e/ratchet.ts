/**
 * The Double Ratchet for private conversations (PROTOCOL §12.4), after Signal's
 * published specification: a root chain advanced by X25519 ratchet steps and a
 * sending and a receiving chain advanced per message. What it protects is a record's
 * content key `k` (wrap.ts), never the body itself: the body stays under `k` with its
 * commitment and the author's certificate signature (§6.1), so non-repudiation and
 * `verify --reveal` work as before while only the recipient can learn `k`.
 *
 * State changes are computed on a copy and committed only after the wrapped key
 * opened, so a forged or replayed message leaves the state as it was.
 */

import { z } from "zod";
import { concat, fromBase64, fromHex, toBase64, toHex, u32be, utf8, wipe } from "../bytes.ts";
import { hkdfExpandSync, hmacSha256Sync } from "../crypto/hkdf.ts";
import { x25519, X25519_KEY_BYTES, type X25519KeyPair, x25519KeyPair } from "../crypto/x25519.ts";
import { SecureChatError } from "../errors.ts";
import { base64Text } from "../wire/schema.ts";
import { chainStep, MAX_SKIP, MAX_STORED_SKIPPED } from "./chain.ts";
import { unwrapContentKey, wrapContentKey } from "./wrap.ts";

const ROOT_INFO = utf8("securechat/e2e ratchet root");
const WRAP_LABEL = utf8("securechat/e2e ratchet\0");
export const HEADER_BYTES = X25519_KEY_BYTES + 4 + 4;
export const BINDING_BYTES = 32;

/** A ratchet message header: the sender's current ratchet key, the previous chain length, n. */
export interface RatchetHeader {
  dh: Uint8Array;
  pn: number;
  n: number;
}

/** header_enc = dh (32) || u32be(pn) || u32be(n). */
export function encodeHeader(h: RatchetHeader): Uint8Array {
  return concat(h.dh, u32be(h.pn), u32be(h.n));
}

/** KDF_RK: HKDF(salt = rk, IKM = dh_out, info) → new root key ‖ chain key. */
function rootStep(rk: Uint8Array, dhOut: Uint8Array): { rk: Uint8Array; ck: Uint8Array } {
  const prk = hmacSha256Sync(rk, dhOut);
  const okm = hkdfExpandSync(prk, ROOT_INFO, 64);
  wipe(prk, dhOut); // best-effort in JS
  return { rk: okm.slice(0, 32), ck: okm.slice(32) };
}

function wrapAad(ad: Uint8Array, header: RatchetHeader, binding: Uint8Array): Uint8Array {
  if (binding.length !== BINDING_BYTES) throw new RangeError("binding is 32 bytes");
  return concat(WRAP_LABEL, ad, encodeHeader(header), binding);
}

interface State {
  ad: Uint8Array;
  dhs: X25519KeyPair;
  dhr?: Uint8Array;
  rk: Uint8Array;
  cks?: Uint8Array;
  ckr?: Uint8Array;
  ns: number;
  nr: number;
  pn: number;
  /** `hex(dh):n` → message key, oldest first. */
  skipped: Map<string, Uint8Array>;
}

function copyState(s: State): State {
  return { ...s, skipped: new Map(s.skipped) };
}

const skippedId = (dh: Uint8Array, n: number) => `${toHex(dh)}:${n}`;

const uint32 = () => z.number().int().min(0).max(0xffff_ffff);
const key32 = () => base64Text(32, 32);
/** The ratchet as the client's state file keeps it (PROTOCOL §12.7). Strict. */
export const RatchetJsonSchema = z.object({
  ad: base64Text(128, 128),
  dhs: key32(),
  dhr: key32().optional(),
  rk: key32(),
  cks: key32().optional(),
  ckr: key32().optional(),
  ns: uint32(),
  nr: uint32(),
  pn: uint32(),
  skipped: z.array(z.tuple([key32(), uint32(), key32()])).max(MAX_STORED_SKIPPED),
}).strict();
export type RatchetJson = z.output<typeof RatchetJsonSchema>;

/** One side of a private conversation. */
export class Ratchet {
  #s: State;
  /** Where fresh ratchet private keys come from; fixed only by test vectors. */
  readonly #nextPrivateKey?: () => Uint8Array;

  private constructor(s: State, nextPrivateKey?: () => Uint8Array) {
    this.#s = s;
    this.#nextPrivateKey = nextPrivateKey;
  }

  /** The initiator, after first contact: sends first, to the responder's signed prekey. */
  static initiator(
    sk: Uint8Array,
    ad: Uint8Array,
    responderSpk: Uint8Array,
    nextPrivateKey?: () => Uint8Array,
  ): Ratchet {
    const dhs = x25519KeyPair(nextPrivateKey?.());
    const { rk, ck } = rootStep(sk, x25519(dhs.privateKey, responderSpk));
    return new Ratchet(
      { ad, dhs, dhr: responderSpk, rk, cks: ck, ns: 0, nr: 0, pn: 0, skipped: new Map() },
      nextPrivateKey,
    );
  }

  /** The responder: its signed prekey is its first ratchet key. */
  static responder(
    sk: Uint8Array,
    ad: Uint8Array,
    spk: X25519KeyPair,
    nextPrivateKey?: () => Uint8Array,
  ): Ratchet {
    return new Ratchet(
      { ad, dhs: spk, rk: sk, ns: 0, nr: 0, pn: 0, skipped: new Map() },
      nextPrivateKey,
    );
  }

  /** Whether this side can send (a responder can once the first message opened). */
  get canSend(): boolean {
    return this.#s.cks !== undefined;
  }

  /**
   * Wraps a content key for the next message. `binding` (32 bytes) ties the wrap to its
   * record (PROTOCOL §12.4).
   * @throws INTERNAL when called before this side can send
   */
  encrypt(k: Uint8Array, binding: Uint8Array): { header: RatchetHeader; wrapped: Uint8Array } {
    const s = this.#s;
    if (s.cks === undefined) throw new SecureChatError("INTERNAL", "ratchet cannot send yet");
    const { mk, next } = chainStep(s.cks);
    const header = { dh: s.dhs.publicKey, pn: s.pn, n: s.ns };
    const wrapped = wrapContentKey(mk, wrapAad(s.ad, header, binding), k);
    wipe(mk, s.cks);
    s.cks = next;
    s.ns += 1;
    return { header, wrapped };
  }

  /**
   * Opens the content key of a received message; the state changes only if it opens.
   * @throws DECRYPT_FAIL (not for this conversation, altered, or its key is gone: the
   *   message is older than this device's state); REPLAY (already opened);
   *   PROTOCOL_ERROR (more than MAX_SKIP messages skipped); BAD_KEY_SHARE (a low-order
   *   ratchet key)
   */
  decrypt(header: RatchetHeader, wrapped: Uint8Array, binding: Uint8Array): Uint8Array {
    const aad = wrapAad(this.#s.ad, header, binding);
    const id = skippedId(header.dh, header.n);
    const stored = this.#s.skipped.get(id);
    if (stored !== undefined) {
      const k = unwrapContentKey(stored, aad, wrapped);
      this.#s.skipped.delete(id);
      wipe(stored);
      return k;
    }
    const s = copyState(this.#s);
    const sameChain = s.dhr !== undefined && toHex(s.dhr) === toHex(header.dh);
    if (sameChain && header.n < s.nr) {
      throw new SecureChatError("REPLAY", "ratchet message already opened");
    }
    if (!sameChain) {
      this.#skipTo(s, header.pn);
      this.#dhStep(s, header.dh);
    }
    this.#skipTo(s, header.n);
    const { mk, next } = chainStep(s.ckr!);
    const k = unwrapContentKey(mk, aad, wrapped); // throws before anything is committed
    wipe(mk);
    s.ckr = next;
    s.nr += 1;
    this.#s = s;
    return k;
  }

  #skipTo(s: State, until: number): void {
    if (s.ckr === undefined) return;
    if (until - s.nr > MAX_SKIP) {
      throw new SecureChatError("PROTOCOL_ERROR", "too many skipped ratchet messages");
    }
    while (s.nr < until) {
      const { mk, next } = chainStep(s.ckr);
      s.skipped.set(skippedId(s.dhr!, s.nr), mk);
      s.ckr = next;
      s.nr += 1;
    }
    while (s.skipped.size > MAX_STORED_SKIPPED) {
      const oldest = s.skipped.keys().next().value!;
      s.skipped.delete(oldest);
    }
  }

  #dhStep(s: State, dh: Uint8Array): void {
    s.pn = s.ns;
    s.ns = 0;
    s.nr = 0;
    s.dhr = dh;
    const recv = rootStep(s.rk, x25519(s.dhs.privateKey, dh));
    s.ckr = recv.ck;
    s.dhs = x25519KeyPair(this.#nextPrivateKey?.());
    const send = rootStep(recv.rk, x25519(s.dhs.privateKey, dh));
    s.rk = send.rk;
    s.cks = send.ck;
  }

  toJSON(): RatchetJson {
    const s = this.#s;
    const json: RatchetJson = {
      ad: toBase64(s.ad),
      dhs: toBase64(s.dhs.privateKey),
      rk: toBase64(s.rk),
      ns: s.ns,
      nr: s.nr,
      pn: s.pn,
      skipped: [...s.skipped].map(([id, mk]) => {
        const [dh, n] = id.split(":");
        return [toBase64(fromHex(dh)), Number(n), toBase64(mk)];
      }),
    };
    if (s.dhr) json.dhr = toBase64(s.dhr);
    if (s.cks) json.cks = toBase64(s.cks);
    if (s.ckr) json.ckr = toBase64(s.ckr);
    return json;
  }

  /**
   * Restores a saved ratchet.
   * @throws PROTOCOL_ERROR for anything that is not a strict saved ratchet
   */
  static fromJSON(value: unknown): Ratchet {
    const parsed = RatchetJsonSchema.safeParse(value);
    if (!parsed.success) throw new SecureChatError("PROTOCOL_ERROR", "malformed saved ratchet");
    const j = parsed.data;
    return new Ratchet({
      ad: fromBase64(j.ad),
      dhs: x25519KeyPair(fromBase64(j.dhs)),
      dhr: j.dhr === undefined ? undefined : fromBase64(j.dhr),
      rk: fromBase64(j.rk),
      cks: j.cks === undefined ? undefined : fromBase64(j.cks),
      ckr: j.ckr === undefined ? undefined : fromBase64(j.ckr),
      ns: j.ns,
      nr: j.nr,
      pn: j.pn,
      skipped: new Map(
        j.skipped.map(([dh, n, mk]) => [skippedId(fromBase64(dh), n), fromBase64(mk)]),
      ),
    });
  }
}
