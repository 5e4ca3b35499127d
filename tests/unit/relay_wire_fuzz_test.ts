/**
 * A client's one parse of a relay (lib/message/relay_wire.ts readRelay, PROTOCOL §6.4 "A relay on
 * the wire") on seeded byte mutations of relays our server writes: every outcome is a relay in its
 * JSON form or a PROTOCOL_ERROR, never another error or a crash; and what it accepts, laid out
 * again by the server's own writer from that JSON form, is the same bytes (one encoding per relay).
 * Replay a failure with SECURECHAT_FUZZ_SEED=<seed>.
 */
import assert from "node:assert/strict";
import { ByteBuilder, fromBase64, toBase64 } from "../../lib/bytes.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import {
  type AuthorCert,
  encodeRecord,
  LOBBY,
  type MessageRecord,
  type PreparedRelay,
  prepareRelay,
  RecipientRelayGroup,
  RecordForms,
  type RelayMessage,
  signBatch,
} from "../../lib/message/record.ts";
import { readRelay } from "../../lib/message/relay_wire.ts";
import { SecureChatError } from "../../lib/errors.ts";
import { makePki } from "../../testkit/pki.ts";
import { fuzzSeed, mutateBytes, Rng } from "../../testkit/fuzz.ts";
import { RATCHET_ENVELOPE } from "../helpers/records.ts";

const SEED = fuzzSeed();
const ROUNDS = 4000;

function wire(relay: RecipientRelayGroup): Uint8Array {
  const out = new ByteBuilder(relay.length);
  relay.writeTo(out);
  return out.done();
}

/**
 * The server's relay of a JSON form's one record of a batch of one (its `sig` and `batch` restored
 * from the form), from the form alone: a relay's proof is made from its records' paths, which a
 * form of a larger batch does not hold.
 */
function rewritten(message: RelayMessage): Uint8Array {
  const [item] = message.records;
  const record: MessageRecord = {
    ...item.record,
    ct: fromBase64(item.record.ct),
    c: fromBase64(item.record.c),
    sig: fromBase64(message.sig),
    batch: { i: 0, n: 1, path: [] },
  };
  const forms = new RecordForms(record, encodeRecord(record));
  const author: AuthorCert = {
    fingerprint: message.author_fp,
    ...(message.cert ? { cert: { base64: message.cert, der: fromBase64(message.cert) } } : {}),
  };
  const prepared: PreparedRelay = "e2e" in item
    ? prepareRelay(author, forms, undefined, item.e2e)
    : prepareRelay(author, forms, fromBase64(item.k));
  return wire(new RecipientRelayGroup(prepared, message.seqno, message.ts, !!message.cert));
}

Deno.test(`readRelay: seeded byte mutations give a relay or PROTOCOL_ERROR, never a crash; what it takes is one encoding (seed ${SEED})`, async () => {
  const pki = await makePki(["alice"]);
  try {
    const alice = await pki.identity("alice");
    const author = authorCertOf(alice.certDer);
    const rng = new Rng(SEED);
    const seeds: Uint8Array[] = [];
    // Batches of one, so that an accepted mutant can be laid out again from its JSON form alone.
    for (
      const [to, carrier] of [
        [LOBBY, {
          e2e: {
            kind: "sender",
            from: "0a".repeat(8),
            id: 7,
            n: 9,
            w: toBase64(new Uint8Array(48)),
          },
        }],
        [LOBBY, { k: new Uint8Array(32).fill(3) }],
        ["user:bob", { e2e: RATCHET_ENVELOPE }],
      ] as const
    ) {
      const record: MessageRecord = {
        sid: "1".repeat(32),
        dir: "c2s",
        to,
        seqno: 5,
        ts: 1_796_000_000_000,
        ct: new Uint8Array(40).fill(1),
        c: new Uint8Array(32).fill(2),
      };
      await signBatch(alice.signingKey, [record]);
      const forms = new RecordForms(record, encodeRecord(record));
      const prepared = "k" in carrier
        ? prepareRelay(author, forms, carrier.k)
        : prepareRelay(author, forms, undefined, carrier.e2e);
      for (const introduce of [true, false]) {
        seeds.push(wire(new RecipientRelayGroup(prepared, 12, 1_796_000_000_100, introduce)));
      }
    }
    let accepted = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const mutant = mutateBytes(rng, rng.pick(seeds));
      let message: RelayMessage;
      try {
        message = readRelay(mutant);
      } catch (error) {
        assert.ok(error instanceof SecureChatError, `seed ${SEED} round ${round}: ${error}`);
        assert.equal(error.code, "PROTOCOL_ERROR", `seed ${SEED} round ${round}`);
        continue;
      }
      accepted++;
      const alone = message.n === 1 && message.records.length === 1 && message.proof.length === 0;
      if (!alone) continue;
      // A `ratchet` envelope's JSON may be spelt otherwise (its carrier is not hashed): compare
      // what the server would write for the same relay, not the mutant, for those.
      const relaid = rewritten(message);
      if (!message.records.some((item) => "e2e" in item && item.e2e.kind === "ratchet")) {
        assert.deepEqual(relaid, mutant, `seed ${SEED} round ${round}: two encodings`);
      }
      assert.deepEqual(readRelay(relaid), message, `seed ${SEED} round ${round}`);
    }
    // Mutations of a byte of `ct`, `c`, `sig` or the ts keep a relay well formed.
    assert.ok(accepted > 0, `seed ${SEED}: no mutant was a well-formed relay`);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
