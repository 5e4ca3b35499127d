/**
 * lib/e2e/client.ts when the server lists no device of a contact we have sessions with
 * (PROTOCOL §12.6): a device whose certificate no longer validates (revoked or expired) is one
 * we would refuse from a list anyway, so its session goes; the devices still valid are the ones
 * the server may be hiding, and the warning counts them (review13 finding 7: the mixed case).
 */
import assert from "node:assert/strict";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { revokeCertificates } from "../../lib/ca/revoke.ts";
import { E2eClient, MemoryStorage } from "../../lib/e2e/client.ts";
import { codeOf } from "../../lib/errors.ts";
import { parseCertificate } from "../../lib/pki/certificate.ts";
import { serialHex } from "../../lib/pki/crl.ts";
import { loadTrustStore } from "../../lib/pki/trust_files.ts";
import type { TrustStore } from "../../lib/pki/validate.ts";
import { makePki, type TestPki } from "../../testkit/pki.ts";
import { publishedDevice } from "../helpers/published_device.ts";
import { SilentServer } from "../helpers/silent_server.ts";

/** A device of `user` under its current certificate, its entry in a fetch's answer and its serial. */
async function device(pki: TestPki, user: string) {
  const { identity, listed } = await publishedDevice(pki, user);
  return { listed, serial: serialHex(parseCertificate(identity.certDer).serial) };
}

/** What `e2e.prepare(user)` throws when the server answers `devices: []`. */
async function refusalOfEmptyList(e2e: E2eClient, user: string): Promise<Error> {
  const server = new SilentServer();
  const preparing = e2e.prepare(user, server);
  await server.fetched();
  await e2e.onKeys({ kind: "keys", user, devices: [] }, server);
  return await preparing.then(
    () => assert.fail("prepare() succeeded on an empty list"),
    (error: Error) => error,
  );
}

Deno.test("e2e: an empty device list drops the sessions whose certificate is revoked and warns about the valid ones the server may be hiding", async () => {
  const pki = await makePki(["alice", "bob"]);
  try {
    // bob's first device under his first certificate, his second under a re-issued one.
    const first = await device(pki, "bob");
    await pki.issue("bob");
    const second = await device(pki, "bob");
    const aliceId = await pki.identity("alice");
    const storage = new MemoryStorage();
    const open = (trust: TrustStore) =>
      E2eClient.open(storage, {
        user: "alice",
        certDer: aliceId.certDer,
        signingKey: aliceId.signingKey,
      }, trust);

    const alice = await open(pki.trust);
    const server = new SilentServer();
    const preparing = alice.prepare("bob", server);
    await server.fetched();
    await alice.onKeys(
      { kind: "keys", user: "bob", devices: [first.listed, second.listed] },
      server,
    );
    assert.equal((await preparing).devices, 2);

    // bob's first certificate is revoked; alice runs again with the CRL that says so.
    await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), first.serial, 7);
    const later = await open(await loadTrustStore(`${pki.dir}/ca.pem`));
    const refusal = await refusalOfEmptyList(later, "bob");
    assert.equal(codeOf(refusal), "NO_E2E_KEYS");
    assert.match(refusal.message, /a conversation with 1 of them/);
    assert.deepEqual(later.devicesOf("bob"), [second.listed.device], "the revoked one's goes");
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
