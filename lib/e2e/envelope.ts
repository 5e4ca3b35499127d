/**
 * The end-to-end layer's JSON forms (PROTOCOL §12): key bundles and one-time prekeys as the
 * server stores and hands them out, and the envelope that travels in a `msg` or `relay` in
 * place of the content key `k` when only the recipients may learn it. A leaf module (zod and
 * the wire's schema and shape helpers only), so the message record can name these without a
 * cycle.
 *
 * The envelope is also the stored form of an end-to-end line: the author's signed record
 * (with its relay `cert`) plus this envelope is everything a recipient device needs to open
 * the line later, which is what an offline queue keeps (PROTOCOL §12.6).
 */
import { z } from "zod";
import { base64Text } from "../wire/schema.ts";
import {
  base64Text as base64Member,
  byType,
  fail,
  list,
  literal,
  lowerHex,
  members,
  nested,
  type Path,
  type Shape,
  shape,
  zodOf,
} from "../wire/shape.ts";

const uint32 = () => z.number().int().min(0).max(0xffff_ffff);
const X25519 = 32;
const KEM_CT = 1088;
/** A wrapped content key: `k` under a message key, with its tag (§12.4, §12.5). */
export const WRAPPED_KEY_BYTES = 48;
const MLKEM_EK = 1184;
/** One-time prekeys one `keys_publish` may upload. */
export const MAX_PREKEYS_PER_PUBLISH = 100;
/**
 * Devices (end-to-end identity keys) the key directory keeps per user, and so the most wraps
 * one private envelope carries (PROTOCOL §12.6): a CLI, a browser and a few spares.
 */
export const MAX_DEVICES = 8;

/** A device id: 16 lower-case hex digits, derived from the device's identity key (§12.2). */
export const DeviceIdSchema = z.string().regex(/^[0-9a-f]{16}$/);

/** A bundle as JSON (§12.2). */
export const BundleJsonSchema = z.object({
  user: z.string().min(1).max(64),
  created: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  ik: base64Text(X25519, X25519),
  spk_id: uint32(),
  spk: base64Text(X25519, X25519),
  pq_id: uint32(),
  pq: base64Text(MLKEM_EK, MLKEM_EK),
  ik_sig: base64Text(1, 1024),
  sig: base64Text(1, 1024),
}).strict();
export type BundleJson = z.output<typeof BundleJsonSchema>;

/** A one-time prekey as JSON. */
export const OneTimePrekeyJsonSchema = z.object({
  id: uint32(),
  pub: base64Text(X25519, X25519),
}).strict();
export type OneTimePrekeyJson = z.output<typeof OneTimePrekeyJsonSchema>;

/** A sender chain as its author hands it to one member (§12.5). */
export const SenderKeyDistributionJsonSchema = z.object({
  id: uint32(),
  n: uint32(),
  ck: base64Text(32, 32),
}).strict();
export type SenderKeyDistributionJson = z.output<typeof SenderKeyDistributionJsonSchema>;

/** PQXDH's first-message header (§12.3). */
export interface PrekeyHeaderJson {
  ik: string;
  ik_sig: string;
  ek: string;
  spk_id: number;
  pq_id: number;
  opk_id?: number;
  kem_ct: string;
}

/** `k` wrapped by the sender device's Double Ratchet toward one recipient device (§12.4). */
export interface DeviceWrapJson {
  device: string;
  dh: string;
  pn: number;
  n: number;
  w: string;
  pre?: PrekeyHeaderJson;
}

/**
 * A private line's envelope (§12.6): one wrap per recipient device, each device at most once.
 * `from` is the author's device, whose ratchet sessions the recipient tries.
 */
export interface RatchetEnvelope {
  kind: "ratchet";
  from: string;
  wraps: DeviceWrapJson[];
}

/** `k` wrapped once under the author device's lobby sender chain (§12.5). */
export interface SenderEnvelope {
  kind: "sender";
  from: string;
  id: number;
  n: number;
  w: string;
}

export type E2eEnvelope = RatchetEnvelope | SenderEnvelope;

// The envelope rides on every end-to-end line, parsed by the server and by every recipient,
// so its shapes are written out (lib/wire/shape.ts) as the record's are; zod cost the server
// more per lobby line than the record's own shape. Same strictness as the zod schemas they
// replace (exactly these members, each its type and bounds); each object is built in the
// order of the members below, whatever the order sent, as zod built it.

/** An integer 0..2^32-1. */
function uint32Member(value: unknown, path: Path, key: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    fail(path, key, "expected an integer 0..4294967295");
  }
  return value;
}

const deviceId = (value: unknown, path: Path, key: string) => lowerHex(value, path, key, 16);
const x25519 = (o: Record<string, unknown>, path: Path, key: string) =>
  base64Member(o[key], path, key, X25519, X25519);
const signature = (o: Record<string, unknown>, path: Path, key: string) =>
  base64Member(o[key], path, key, 1, 1024);

const PREKEY_HEADER_MEMBERS = ["ik", "ik_sig", "ek", "spk_id", "pq_id", "kem_ct"];

/** PQXDH's first-message header (§12.3). */
export const PrekeyHeaderShape: Shape<PrekeyHeaderJson> = shape((v, p) => {
  const o = members(v, p, PREKEY_HEADER_MEMBERS, ["opk_id"]);
  const ik = x25519(o, p, "ik");
  const ik_sig = signature(o, p, "ik_sig");
  const ek = x25519(o, p, "ek");
  const spk_id = uint32Member(o.spk_id, p, "spk_id");
  const pq_id = uint32Member(o.pq_id, p, "pq_id");
  const opk_id = Object.hasOwn(o, "opk_id") ? uint32Member(o.opk_id, p, "opk_id") : undefined;
  const kem_ct = base64Member(o.kem_ct, p, "kem_ct", KEM_CT, KEM_CT);
  return opk_id === undefined
    ? { ik, ik_sig, ek, spk_id, pq_id, kem_ct }
    : { ik, ik_sig, ek, spk_id, pq_id, opk_id, kem_ct };
});
/** {@link PrekeyHeaderShape} inside zod schemas (a device's stored sessions). */
export const PrekeyHeaderJsonSchema = zodOf(PrekeyHeaderShape);

const WRAP_MEMBERS = ["device", "dh", "pn", "n", "w"];

function deviceWrap(v: unknown, p: Path): DeviceWrapJson {
  const o = members(v, p, WRAP_MEMBERS, ["pre"]);
  const wrap: DeviceWrapJson = {
    device: deviceId(o.device, p, "device"),
    dh: x25519(o, p, "dh"),
    pn: uint32Member(o.pn, p, "pn"),
    n: uint32Member(o.n, p, "n"),
    w: base64Member(o.w, p, "w", WRAPPED_KEY_BYTES, WRAPPED_KEY_BYTES),
  };
  if (Object.hasOwn(o, "pre")) wrap.pre = nested(PrekeyHeaderShape, o.pre, p, "pre");
  return wrap;
}

const RATCHET_MEMBERS = ["kind", "from", "wraps"];

const RatchetEnvelopeShape: Shape<RatchetEnvelope> = shape((v, p) => {
  const o = members(v, p, RATCHET_MEMBERS);
  literal(o.kind, p, "kind", ["ratchet"]);
  const from = deviceId(o.from, p, "from");
  const items = list(o.wraps, p, "wraps", MAX_DEVICES);
  if (items.length === 0) fail(p, "wraps", "expected at least 1 item");
  const at = [...p, "wraps"];
  const wraps = items.map((item, i) => deviceWrap(item, [...at, i]));
  if (new Set(wraps.map((w) => w.device)).size !== wraps.length) {
    fail(p, "wraps", "a device appears twice");
  }
  return { kind: "ratchet", from, wraps };
});

const SENDER_MEMBERS = ["kind", "from", "id", "n", "w"];

const SenderEnvelopeShape: Shape<SenderEnvelope> = shape((v, p) => {
  const o = members(v, p, SENDER_MEMBERS);
  literal(o.kind, p, "kind", ["sender"]);
  return {
    kind: "sender",
    from: deviceId(o.from, p, "from"),
    id: uint32Member(o.id, p, "id"),
    n: uint32Member(o.n, p, "n"),
    w: base64Member(o.w, p, "w", WRAPPED_KEY_BYTES, WRAPPED_KEY_BYTES),
  };
});

/** The envelope of an end-to-end `msg` or `relay`, by its `kind`. */
export const E2eEnvelopeShape: Shape<E2eEnvelope> = byType<E2eEnvelope>(
  { ratchet: RatchetEnvelopeShape, sender: SenderEnvelopeShape },
  "kind",
);
/** {@link E2eEnvelopeShape} inside zod schemas (cluster records). */
export const E2eEnvelopeSchema = zodOf(E2eEnvelopeShape);
