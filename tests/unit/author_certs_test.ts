/**
 * lib/message/author_certs.ts: the session's list of introduced author certificates
 * (PROTOCOL §6.4.1), which the server, the recipient and verify must all run the same way.
 */
import assert from "node:assert/strict";
import { codeOf } from "../../lib/errors.ts";
import { SESSION_CERTS, SessionCertList } from "../../lib/message/author_certs.ts";
import { fingerprintOf } from "../../lib/pki/describe.ts";

const der = (i: number) => new TextEncoder().encode(`certificate ${i}`);
const fp = (i: number) => fingerprintOf(der(i));

function codeOfAdmit(list: SessionCertList<Uint8Array>, name: string, cert?: Uint8Array): string {
  try {
    list.admit(name, cert, (d) => d);
    return "ok";
  } catch (error) {
    return codeOf(error);
  }
}

Deno.test("SessionCertList.mustIntroduce(): once per certificate, again only after it was dropped as least recently used", () => {
  const server = new SessionCertList<true>(3);
  assert.deepEqual([1, 2, 3].map((i) => server.mustIntroduce(fp(i), true)), [true, true, true]);
  assert.equal(server.mustIntroduce(fp(1), true), false); // 1 is now the most recent
  assert.equal(server.mustIntroduce(fp(4), true), true); // drops 2, the least recently used
  assert.equal(server.size, 3);
  assert.equal(server.mustIntroduce(fp(2), true), true); // introduced again; drops 3
  assert.equal(server.mustIntroduce(fp(1), true), false);
  assert.equal(server.mustIntroduce(fp(3), true), true);
  assert.equal(SESSION_CERTS, 256);
  assert.equal(new SessionCertList().capacity, SESSION_CERTS);
});

Deno.test("SessionCertList.admit(): the recipient's list stays the server's, and refuses every other sequence", () => {
  const server = new SessionCertList<true>(3);
  const recipient = new SessionCertList<Uint8Array>(3);
  for (const i of [1, 2, 3, 1, 4, 2, 5, 1, 1, 3, 6, 2]) {
    const introduce = server.mustIntroduce(fp(i), true);
    assert.deepEqual(recipient.admit(fp(i), introduce ? der(i) : undefined, (d) => d), der(i));
  }
  const list = new SessionCertList<Uint8Array>(2);
  assert.equal(codeOfAdmit(list, fp(1)), "PROTOCOL_ERROR"); // named, never introduced
  assert.equal(codeOfAdmit(list, fp(1), der(2)), "TAMPERED"); // other bytes under the name
  assert.equal(codeOfAdmit(list, fp(1), der(1)), "ok");
  assert.equal(codeOfAdmit(list, fp(1), der(1)), "PROTOCOL_ERROR"); // introduced twice
  assert.equal(codeOfAdmit(list, fp(2), der(2)), "ok");
  assert.equal(codeOfAdmit(list, fp(3), der(3)), "ok"); // drops 1
  assert.equal(codeOfAdmit(list, fp(1)), "PROTOCOL_ERROR"); // dropped: must be introduced again
  assert.equal(codeOfAdmit(list, fp(2)), "ok");
});
