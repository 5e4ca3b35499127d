/**
 * Interop finding 108: PROTOCOL §6.1 states the client's local check for §6.3 step 7 as a
 * formula, `largest(to)`, with its constants; this holds it to lib/'s own measure
 * (largestLoneRelayBytes, which builds the relay and `stored` with every member at its largest),
 * and the certificate sizes the text derives from it.
 */
import assert from "node:assert/strict";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import {
  encodeRecord,
  largestLoneRelayBytes,
  loneRelayBytes,
  MAX_CT_BYTES,
  type MessageRecord,
  prepareRelay,
  RecipientRelay,
  RecipientRelayGroup,
  RecordForms,
  signBatch,
} from "../../lib/message/record.ts";
import { makePki } from "../../testkit/pki.ts";
import { RATCHET_ENVELOPE, SENDER_ENVELOPE, wireBytes } from "../helpers/records.ts";

const b64 = (n: number) => 4 * Math.ceil(n / 3);

/** PROTOCOL §6.1's `largest(to)`, as the text gives it. */
function largest(to: string, certBytes: number, ctBytes: number, sigBytes: number): number {
  const [c, m] = to === "lobby" ? [765, 1] : [15354, 9];
  return c + b64(certBytes) + b64(ctBytes) + m * b64(sigBytes);
}

Deno.test("PROTOCOL §6.1's largest(to) is lib's largest lone relay or stored, to the byte (interop finding 108)", () => {
  for (const to of ["lobby", "user:bob", "user:" + "x".repeat(32)]) {
    for (const certBytes of [300, 301, 302, 810, 4096, 16 * 1024]) {
      const author = authorCertOf(new Uint8Array(certBytes));
      for (const sigBytes of [64, 256, 384, 512, 1024]) {
        for (const ctBytes of [16, 17, 18, 1000, MAX_CT_BYTES]) {
          assert.equal(
            largestLoneRelayBytes(author, sigBytes, to, ctBytes),
            largest(to, certBytes, ctBytes, sigBytes),
            `${to}, a ${certBytes}-byte certificate, ${sigBytes}-byte signatures, ct ${ctBytes}`,
          );
        }
      }
    }
  }
  // The text's examples: the largest certificate a private line of the largest ct leaves with.
  const largestCert = (to: string, sigBytes: number) => {
    let cert = 0;
    while (largest(to, cert + 1, MAX_CT_BYTES, sigBytes) <= MAX_CONTENT_BYTES) cert++;
    return cert;
  };
  assert.equal(largestCert("user:bob", 64), 12270, "Ed25519");
  assert.equal(largestCert("user:bob", 256), 10542, "RSA-2048");
  assert.ok(largest("lobby", 16 * 1024, MAX_CT_BYTES, 1024) <= MAX_CONTENT_BYTES, "lobby: any");
});

Deno.test("loneRelayBytes is the longest relay or stored of a record alone, to the byte, whatever its path (interop finding 116: a proof's last entry was counted with a comma)", async () => {
  const pki = await makePki(["alice"]);
  try {
    const alice = await pki.identity("alice");
    const author = authorCertOf(alice.certDer);
    const hop = Number.MAX_SAFE_INTEGER; // the hop's seqno and ts at their longest
    for (const n of [1, 2, 3, 8, 32]) {
      const records: MessageRecord[] = Array.from({ length: n }, (_, j) => ({
        sid: "1".repeat(32),
        dir: "c2s",
        to: j % 2 ? "lobby" : "user:bob",
        seqno: 1 + j,
        ts: Date.now(),
        ct: new Uint8Array(100 + j),
        c: new Uint8Array(32),
      }));
      await signBatch(alice.signingKey, records);
      for (const record of records) {
        const forms = new RecordForms(record, encodeRecord(record));
        const carriers = record.to === "lobby"
          ? [{ k: new Uint8Array(32) }, { e2e: SENDER_ENVELOPE }]
          : [{ k: new Uint8Array(32) }, { e2e: RATCHET_ENVELOPE }];
        for (const carrier of carriers) {
          const prepared = prepareRelay(author, forms, carrier.k, carrier.e2e);
          // Bytes, not characters: a relay is binary (PROTOCOL §6.4 "A relay on the wire").
          const relay = wireBytes(new RecipientRelayGroup(prepared, hop, hop, true)).length;
          const stored = wireBytes(new RecipientRelay(prepared, hop, hop, "stored", true)).length;
          // §6.1: the `stored` is the larger, since relays are binary (what largest(to) measures).
          assert.ok(relay < stored, `relay ${relay} bytes, stored ${stored}`);
          assert.equal(
            loneRelayBytes(prepared),
            Math.max(relay, stored),
            `record ${record.seqno} of ${n} (a path of ${record.batch!.path.length}), ` +
              `${carrier.k ? "k" : "e2e"}: relay ${relay}, stored ${stored}`,
          );
        }
      }
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
