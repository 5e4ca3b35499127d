/**
 * lib/server/own_certificate.ts: when a server may start with its own certificate, and what it
 * is told as the certificate's lapse comes (PROTOCOL §5.2).
 */
import assert from "node:assert/strict";
import { codeOf, SecureChatError } from "../../lib/errors.ts";
import {
  CERT_WARNINGS_MS,
  checkOwnCertificate,
  closeMarginMs,
  type OwnCertificate,
  ownCertificate,
  watchOwnCertificate,
} from "../../lib/server/own_certificate.ts";
import { makePki } from "../../testkit/pki.ts";

const pki = await makePki([]);
globalThis.addEventListener("unload", () => Deno.removeSync(pki.dir, { recursive: true }));
const server = await pki.identity("server");
const MARGIN = closeMarginMs(5000);
const NOW = Date.now();
const DAY = 24 * 60 * 60 * 1000;

function own(validFrom: number, lapsesAt: number): OwnCertificate {
  return { ...ownCertificate(server.certDer, pki.trust), validFrom, lapsesAt };
}

function refusal(o: OwnCertificate): string {
  try {
    checkOwnCertificate(o, pki.trust, MARGIN, NOW);
  } catch (error) {
    assert.equal(codeOf(error), "BAD_CERT");
    return (error as SecureChatError).message;
  }
  return "started";
}

Deno.test("closeMarginMs(): twice the close timeout, plus 20 s (30 s by default)", () => {
  assert.equal(closeMarginMs(5000), 30_000);
  assert.equal(closeMarginMs(1000), 22_000);
});

Deno.test("ownCertificate(): the window is the server certificate's within the CA's", () => {
  const o = ownCertificate(server.certDer, pki.trust);
  assert.equal(o.lapsing, "server certificate", "makePki's CA outlives its server certificate");
  assert.ok(o.lapsesAt <= pki.trust.ca.notAfter.getTime());
  assert.ok(o.validFrom >= pki.trust.ca.notBefore.getTime());
});

Deno.test("checkOwnCertificate(): refuses a certificate not yet valid, expired, or lapsing within the close margin; takes one just outside it", () => {
  assert.match(refusal(own(NOW + 1000, NOW + DAY)), /not valid until/);
  assert.match(refusal(own(NOW - DAY, NOW - 1)), /server certificate expired at/);
  assert.match(refusal(own(NOW - DAY, NOW)), /expired at/);
  assert.match(
    refusal(own(NOW - DAY, NOW + MARGIN - 1)),
    /expires at .*, in 30 s: sessions must close 30 s before it/,
  );
  assert.equal(refusal(own(NOW - DAY, NOW + MARGIN + 1)), "started");
  assert.equal(refusal(ownCertificate(server.certDer, pki.trust)), "started");
});

Deno.test("watchOwnCertificate(): warns at once within 14 days, and calls onLapse at the lapse less the margin", async () => {
  const logged: string[] = [];
  const lapsesAt = Date.now() + 400;
  let lapsedAt = 0;
  const lapsed = Promise.withResolvers<void>();
  const watch = watchOwnCertificate(
    own(NOW - DAY, lapsesAt),
    300,
    (event, fields) => logged.push(`${event}: ${fields?.detail}`),
    () => {
      lapsedAt = Date.now();
      lapsed.resolve();
    },
  );
  try {
    assert.equal(logged.length, 1, logged.join("\n"));
    assert.match(logged[0], /^CERT_EXPIRING: the server certificate expires at .*, in 0 s;/);
    await lapsed.promise;
    assert.ok(lapsedAt >= lapsesAt - 300 - 20, `onLapse ${lapsesAt - lapsedAt} ms before`);
    assert.ok(lapsedAt < lapsesAt, "onLapse came after the lapse itself");
  } finally {
    watch.stop();
  }
});

Deno.test("watchOwnCertificate(): says nothing while more than 14 days remain, and stop() cancels all", () => {
  const logged: string[] = [];
  const watch = watchOwnCertificate(
    own(NOW - DAY, Date.now() + CERT_WARNINGS_MS[0] + DAY),
    MARGIN,
    (event) => logged.push(event),
    () => logged.push("lapsed"),
  );
  watch.stop();
  assert.deepEqual(logged, []);
});
