/**
 * Interop finding 108: PROTOCOL §6.1 states the client's local check for §6.3 step 7 as a
 * formula, `largest(to)`, with its constants; this holds it to lib/'s own measure
 * (largestLoneRelayBytes, which builds the relay and `stored` with every member at its largest),
 * and the certificate sizes the text derives from it.
 */
import assert from "node:assert/strict";
import { MAX_CONTENT_BYTES } from "../../lib/handshake/record.ts";
import { authorCertOf } from "../../lib/message/author_certs.ts";
import { largestLoneRelayBytes, MAX_CT_BYTES } from "../../lib/message/record.ts";

const b64 = (n: number) => 4 * Math.ceil(n / 3);

/** PROTOCOL §6.1's `largest(to)`, as the text gives it. */
function largest(to: string, certBytes: number, ctBytes: number, sigBytes: number): number {
  const [c, m] = to === "lobby" ? [788, 1] : [15377, 9];
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
  assert.equal(largestCert("user:bob", 64), 12252, "Ed25519");
  assert.equal(largestCert("user:bob", 256), 10524, "RSA-2048");
  assert.ok(largest("lobby", 16 * 1024, MAX_CT_BYTES, 1024) <= MAX_CONTENT_BYTES, "lobby: any");
});
