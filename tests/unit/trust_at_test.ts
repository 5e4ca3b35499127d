/**
 * lib/transcript/trust_at.ts directly: certificates are judged as they stood at the session
 * time (TRANSCRIPT.md §5 step 2); revocation is judged by date (step 3: validate() leaves it to
 * the caller, revokedFrom() gives the CRL entry's date); and the server name a header without
 * one is checked against.
 */
import { loadTrustStore } from "../../lib/pki/trust_files.ts";
import assert from "node:assert/strict";
import { codeOf } from "../../lib/errors.ts";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { issueCertificate } from "../../lib/ca/issue.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { revokeCertificates } from "../../lib/ca/revoke.ts";
import { validatePeerCertificate } from "../../lib/pki/validate.ts";
import { ownServerName, TrustAtSessionTime } from "../../lib/transcript/trust_at.ts";
import { makePki } from "../../testkit/pki.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const MINUTE_MS = 60 * 1000;

const pki = await makePki(["alice", "bob", "carol"]);
const rogue = await makePki(["alice"]);
globalThis.addEventListener("unload", () => {
  for (const dir of [pki.dir, rogue.dir]) Deno.removeSync(dir, { recursive: true });
});

async function certDer(dir: string, name: string): Promise<Uint8Array> {
  return pemDecode(await Deno.readTextFile(`${dir}/${name}.pem`), "CERTIFICATE", "BAD_CERT");
}

async function outcome(
  trust: TrustAtSessionTime,
  der: Uint8Array,
  opts: Parameters<TrustAtSessionTime["validate"]>[1],
): Promise<string> {
  return await trust.validate(der, opts).then((peer) => `ok ${peer.commonName}`, codeOf);
}

Deno.test("TrustAtSessionTime.validate() judges validity at the session's time, not today's", async () => {
  const trust = new TrustAtSessionTime(pki.trust);
  const alice = await certDer(pki.dir, "alice"); // valid from 5 min ago for 30 days
  const at = (ms: number) => ({ role: "client" as const, now: new Date(Date.now() + ms) });
  assert.equal(await outcome(trust, alice, at(0)), "ok alice");
  assert.equal(await outcome(trust, alice, at(29 * DAY_MS)), "ok alice");
  assert.equal(await outcome(trust, alice, at(31 * DAY_MS)), "BAD_CERT", "expired by then");
  assert.equal(await outcome(trust, alice, at(-DAY_MS)), "BAD_CERT", "not yet valid then");
});

Deno.test("TrustAtSessionTime.validate() checks role, name and chain as validatePeerCertificate does", async () => {
  const trust = new TrustAtSessionTime(pki.trust);
  const now = new Date();
  const server = await certDer(pki.dir, "server");
  assert.equal(
    await outcome(trust, server, { role: "server", now, expectedName: "localhost" }),
    "ok server",
  );
  assert.equal(
    await outcome(trust, server, { role: "server", now, expectedName: "example.com" }),
    "BAD_CERT",
  );
  assert.equal(await outcome(trust, server, { role: "client", now }), "BAD_CERT", "no clientAuth");
  const alice = await certDer(pki.dir, "alice");
  assert.equal(
    await outcome(trust, alice, { role: "client", now, expectedName: "bob" }),
    "BAD_CERT",
  );
  const stranger = await certDer(rogue.dir, "alice");
  assert.equal(await outcome(trust, stranger, { role: "client", now }), "BAD_CERT", "other CA");
  assert.equal(await outcome(trust, new Uint8Array(64), { role: "client", now }), "BAD_CERT");
});

Deno.test("TrustAtSessionTime: today's CRL is read for its dates, though it was issued after the session", async () => {
  const dir = await Deno.makeTempDir({ prefix: "securechat-trust-at-" });
  try {
    await makePki(["alice", "bob"], "ed25519", dir);
    await revokeCertificates(dir, await loadCaSigner(dir), "bob", 7);
    const store = await loadTrustStore(`${dir}/ca.pem`); // picks up ca.crl
    assert.ok(store.crl, "the CRL is loaded");
    const trust = new TrustAtSessionTime(store);
    // A session two minutes ago: the certificates were valid, the CRL did not exist yet.
    const now = new Date(Date.now() - 2 * MINUTE_MS);
    const [alice, bob] = [await certDer(dir, "alice"), await certDer(dir, "bob")];
    assert.equal(await outcome(trust, alice, { role: "client", now }), "ok alice");
    // Revocation by date (issue 11 item 12): bob validates as he stood then, and the CRL says
    // from when his signatures are not trusted — after this session, so it stands.
    const bobThen = await trust.validate(bob, { role: "client", now });
    const from = trust.revokedFrom(bobThen);
    assert.ok(from && from > now, `bob revoked from ${from?.toISOString()}`);
    assert.equal(trust.revokedFrom(await trust.validate(alice, { role: "client", now })), null);
    // Plain validation at that time refuses everyone: the CRL is "not yet valid" then.
    assert.equal(
      await validatePeerCertificate(store, alice, { role: "client", now }).then(() => "ok", codeOf),
      "BAD_CERT",
    );
    // The store itself keeps its CRL.
    assert.equal(trust.trust, store);
    assert.ok(trust.trust.crl);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ownServerName(): the first DNS name, else the first IP address, else empty", async () => {
  assert.equal(ownServerName(await certDer(pki.dir, "server")), "localhost");
  const ca = await loadCaSigner(pki.dir);
  const issue = async (name: string, ip: string[]) => {
    await issueCertificate(
      pki.dir,
      ca,
      { name, profile: "server", dns: [], ip, days: 30, keyType: "ed25519" },
      true,
    );
    return ownServerName(await certDer(pki.dir, name));
  };
  assert.equal(await issue("ip4-only", ["10.0.0.7", "10.0.0.8"]), "10.0.0.7");
  assert.equal(await issue("ip6-only", ["2001:db8::1"]), "2001:db8::1");
  assert.equal(ownServerName(await certDer(pki.dir, "carol")), "", "a client has no SAN");
  assert.equal(ownServerName(new Uint8Array([0x30, 0x03, 0x02])), "", "not a certificate");
});
