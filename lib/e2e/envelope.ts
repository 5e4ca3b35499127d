/**
 * The end-to-end layer's JSON forms (PROTOCOL §12): key bundles and one-time prekeys as the
 * server stores and hands them out, and the envelope that travels in a `msg` or `relay` in
 * place of the content key `k` when only the recipients may learn it. A leaf module (zod
 * and the schema helpers only), so the message record can name these without a cycle.
 *
 * The envelope is also the stored form of an end-to-end line: the author's signed record
 * (with its relay `cert`) plus this envelope is everything a recipient device needs to open
 * the line later, which is what an offline queue keeps (PROTOCOL §12.6).
 */
import { z } from "zod";
import { base64Text } from "../wire/schema.ts";

const uint32 = () => z.number().int().min(0).max(0xffff_ffff);
const X25519 = 32;
const KEM_CT = 1088;
const WRAPPED = 48;
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
export const PrekeyHeaderJsonSchema = z.object({
  ik: base64Text(X25519, X25519),
  ik_sig: base64Text(1, 1024),
  ek: base64Text(X25519, X25519),
  spk_id: uint32(),
  pq_id: uint32(),
  opk_id: uint32().optional(),
  kem_ct: base64Text(KEM_CT, KEM_CT),
}).strict();
export type PrekeyHeaderJson = z.output<typeof PrekeyHeaderJsonSchema>;

/** `k` wrapped by the sender device's Double Ratchet toward one recipient device (§12.4). */
export const DeviceWrapSchema = z.object({
  device: DeviceIdSchema,
  dh: base64Text(X25519, X25519),
  pn: uint32(),
  n: uint32(),
  w: base64Text(WRAPPED, WRAPPED),
  pre: PrekeyHeaderJsonSchema.optional(),
}).strict();
export type DeviceWrapJson = z.output<typeof DeviceWrapSchema>;

/**
 * A private line's envelope (§12.6): one wrap per recipient device, each device at most once.
 * `from` is the author's device, whose ratchet sessions the recipient tries.
 */
const RatchetEnvelopeSchema = z.object({
  kind: z.literal("ratchet"),
  from: DeviceIdSchema,
  wraps: z.array(DeviceWrapSchema).min(1).max(MAX_DEVICES).refine(
    (wraps) => new Set(wraps.map((w) => w.device)).size === wraps.length,
    "a device appears twice",
  ),
}).strict();

/** `k` wrapped once under the author device's lobby sender chain (§12.5). */
const SenderEnvelopeSchema = z.object({
  kind: z.literal("sender"),
  from: DeviceIdSchema,
  id: uint32(),
  n: uint32(),
  w: base64Text(WRAPPED, WRAPPED),
}).strict();

export const E2eEnvelopeSchema = z.discriminatedUnion("kind", [
  RatchetEnvelopeSchema,
  SenderEnvelopeSchema,
]);
export type E2eEnvelope = z.output<typeof E2eEnvelopeSchema>;
export type RatchetEnvelope = z.output<typeof RatchetEnvelopeSchema>;
export type SenderEnvelope = z.output<typeof SenderEnvelopeSchema>;
