/**
 * Issue 15: what a node does with the CRL the cluster shares (lib/server/revocation.ts,
 * docs/DEPLOY.md §4.6), without NATS: a genuine newer CRL is adopted and ends sessions; a
 * forged, older or missing one is refused (logged with its code) and ours is put back; a CRL
 * refused for anything else is not, so two nodes never take turns overwriting each other.
 */
import assert from "node:assert/strict";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { readInventory } from "../../lib/ca/inventory.ts";
import { revokeCertificates, writeCrl } from "../../lib/ca/revoke.ts";
import { createCrl } from "../../lib/ca/crl_sign.ts";
import { signingAlgorithmOf } from "../../lib/pki/keys.ts";
import { pemDecode } from "../../lib/pki/pem.ts";
import { CRL_CLOCK_SKEW_MS } from "../../lib/pki/crl.ts";
import { TrustStore } from "../../lib/pki/validate.ts";
import { CrlWatcher } from "../../lib/server/revocation.ts";
import type { LogFields } from "../../lib/log.ts";
import { codeOf, SecureChatError } from "../../lib/errors.ts";
import { makePki } from "../../testkit/pki.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

async function crlFile(dir: string): Promise<Uint8Array> {
  return pemDecode(await Deno.readTextFile(`${dir}/ca.crl`), "X509 CRL", "BAD_CERT");
}

Deno.test("CrlWatcher.offerShared() adopts a newer shared CRL and puts ours back only in place of a forged, older or missing one", async () => {
  const pki = await makePki(["alice", "bob"]);
  const stranger = await makePki([]);
  try {
    const ca = await loadCaSigner(pki.dir);
    const serialOf = async (name: string) =>
      (await readInventory(pki.dir)).certificates.find((e) => e.name === name)!.serial;
    await writeCrl(pki.dir, ca, await readInventory(pki.dir), 30);
    const first = await crlFile(pki.dir);
    await revokeCertificates(pki.dir, ca, "bob", 30);
    const second = await crlFile(pki.dir);
    // Another CA's CRL under a high number, revoking our alice: a forgery.
    const other = await loadCaSigner(stranger.dir);
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    const forged = await createCrl({
      caCert: other.cert,
      caKey: other.key,
      signingAlgorithm: signingAlgorithmOf(other.key),
      crlNumber: 99,
      entries: [{ serial: await serialOf("alice"), revokedAt: now }],
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + DAY_MS),
    });
    // Our CA signing number 2 twice with other contents (a restored backup of the CA, say).
    const inventory = await readInventory(pki.dir);
    inventory.crlNumber = 1;
    inventory.certificates.find((e) => e.name === "alice")!.revokedAt = now.toISOString();
    await writeCrl(pki.dir, ca, inventory, 30);
    const twin = await crlFile(pki.dir);

    const trust = await TrustStore.fromPem(await Deno.readTextFile(`${pki.dir}/ca.pem`));
    const logs: (LogFields & { event: string })[] = [];
    const shared: Uint8Array[] = [];
    const revoked: Set<string>[] = [];
    const watcher = new CrlWatcher({
      path: `${pki.dir}/follows-no-file.crl`,
      trust,
      log: (event, fields = {}) => logs.push({ event, ...fields }),
      onRevoked: (serials) => revoked.push(serials),
      share: (der) => {
        shared.push(der);
        return Promise.resolve(true);
      },
    });
    const offer = async (der: Uint8Array | undefined) => {
      logs.length = 0;
      shared.length = 0;
      await watcher.offerShared(der && { der, node: "n9" });
      return { logs: [...logs], shared: [...shared] };
    };

    let outcome = await offer(undefined);
    assert.deepEqual(outcome, { logs: [], shared: [] }, "no CRL anywhere: nothing to share");

    outcome = await offer(first);
    assert.equal(outcome.logs[0].event, "CRL_LOADED");
    assert.equal(outcome.logs[0].source, "cluster");
    assert.equal(outcome.logs[0].from, "n9");
    assert.deepEqual(outcome.shared, []);
    assert.deepEqual(revoked, [], "CRL 1 revokes nobody");

    outcome = await offer(second);
    assert.equal(outcome.logs[0].event, "CRL_LOADED");
    assert.deepEqual(revoked, [new Set([await serialOf("bob")])]);

    for (
      const [what, der, code] of [
        ["forged", forged, "BAD_CERT"],
        ["older", first, "STALE"],
        ["not DER", new Uint8Array([0x30, 0x03, 1, 2, 3]), "BAD_CERT"],
      ] as const
    ) {
      outcome = await offer(der);
      assert.equal(outcome.logs[0].event, "CRL_REFUSED", what);
      assert.equal(outcome.logs[0].code, code, what);
      assert.match(String(outcome.logs[0].detail), /the CRL in force stays/, what);
      assert.deepEqual(outcome.shared, [second], `${what}: ours is put back`);
      assert.equal(outcome.logs[1]?.event, "CRL_SHARED", what);
    }
    assert.ok(!trust.isRevoked(await serialOf("alice")), "the forgery revoked nobody");

    outcome = await offer(twin);
    assert.equal(outcome.logs[0].event, "CRL_REFUSED");
    assert.match(String(outcome.logs[0].detail), /already in force with other contents/);
    assert.deepEqual(outcome.shared, [], "a twin is left to the operator, not fought over");

    outcome = await offer(undefined);
    assert.deepEqual(outcome.shared, [second], "the shared CRL was deleted: ours goes back");

    outcome = await offer(second);
    assert.deepEqual(outcome, { logs: [], shared: [] }, "the CRL in force, heard again");
    assert.equal(revoked.length, 1);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
    await Deno.remove(stranger.dir, { recursive: true });
  }
});

Deno.test("CrlWatcher.reload() shares a CRL it adopts from its file", async () => {
  const pki = await makePki(["alice"]);
  try {
    const ca = await loadCaSigner(pki.dir);
    const trust = await TrustStore.fromPem(await Deno.readTextFile(`${pki.dir}/ca.pem`));
    const shared: Uint8Array[] = [];
    const watcher = new CrlWatcher({
      path: `${pki.dir}/ca.crl`,
      trust,
      log: () => {},
      onRevoked: () => {},
      share: (der) => {
        shared.push(der);
        return Promise.resolve(false); // another node put one meanwhile: no CRL_SHARED
      },
    });
    await revokeCertificates(pki.dir, ca, "alice", 30);
    await watcher.reload();
    assert.deepEqual(shared, [await crlFile(pki.dir)]);
    await watcher.reload();
    assert.equal(shared.length, 1, "the same file again is not shared again");
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("TrustStore.adoptCrl() takes a CRL signed on a clock a little ahead, not one far ahead", async () => {
  const pki = await makePki([]);
  try {
    const ca = await loadCaSigner(pki.dir);
    const signedAt = async (ahead: number, crlNumber: number) => {
      const thisUpdate = new Date(Date.now() + ahead);
      return await createCrl({
        caCert: ca.cert,
        caKey: ca.key,
        signingAlgorithm: signingAlgorithmOf(ca.key),
        crlNumber,
        entries: [],
        thisUpdate,
        nextUpdate: new Date(thisUpdate.getTime() + DAY_MS),
      });
    };
    const trust = await TrustStore.fromPem(await Deno.readTextFile(`${pki.dir}/ca.pem`));
    const near = await trust.checkCrl(await signedAt(2000, 1));
    assert.deepEqual(trust.adoptCrl(near), new Set());
    const far = await trust.checkCrl(await signedAt(CRL_CLOCK_SKEW_MS + 60_000, 2));
    const error = (() => {
      try {
        trust.adoptCrl(far);
      } catch (e) {
        return e;
      }
    })();
    assert.equal(codeOf(error), "BAD_CERT");
    assert.match(String(error), /not yet valid/);
    assert.equal(trust.crl, near);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("CrlWatcher: a CRL that could not be shared (NATS down) is shared at the next check", async () => {
  const pki = await makePki(["alice"]);
  try {
    const ca = await loadCaSigner(pki.dir);
    const trust = await TrustStore.fromPem(await Deno.readTextFile(`${pki.dir}/ca.pem`));
    const logs: string[] = [];
    let up = false;
    const shared: Uint8Array[] = [];
    const watcher = new CrlWatcher({
      path: `${pki.dir}/ca.crl`,
      trust,
      log: (event) => void logs.push(event),
      onRevoked: () => {},
      share: (der) => {
        if (!up) return Promise.reject(new SecureChatError("CLUSTER_UNAVAILABLE", "NATS down"));
        shared.push(der);
        return Promise.resolve(true);
      },
    });
    await revokeCertificates(pki.dir, ca, "alice", 30);
    await watcher.reload(false);
    assert.deepEqual(logs, ["CRL_LOADED", "CLUSTER_UNAVAILABLE"]);
    await watcher.reload(false);
    assert.equal(logs.at(-1), "CLUSTER_UNAVAILABLE", "still down: tried again, still unshared");
    up = true;
    await watcher.reload(false);
    assert.deepEqual(shared, [await crlFile(pki.dir)]);
    assert.equal(logs.at(-1), "CRL_SHARED");
    await watcher.reload(false);
    assert.equal(shared.length, 1, "shared once");
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
