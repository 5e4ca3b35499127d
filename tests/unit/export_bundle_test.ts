/**
 * The export bundle (lib/pki/export_bundle.ts): what `cert export` writes and the page opens.
 * Each refusal has its code: a wrong password, a key that is not the certificate's, a
 * certificate from another CA or revoked by the bundle's CRL, a CRL that is not the CA's, and
 * anything but the three blocks (and an optional CRL) in order.
 */
import assert from "node:assert/strict";
import { codeOf } from "../../lib/errors.ts";
import { readCertificateDer, readPrivateKeyPkcs8 } from "../../lib/pki/key_files.ts";
import {
  decodeExportBundle,
  encodeExportBundle,
  openExportBundle,
} from "../../lib/pki/export_bundle.ts";
import { pemEncode } from "../../lib/pki/pem.ts";
import { validatePeerCertificate } from "../../lib/pki/validate.ts";
import { loadCaSigner } from "../../lib/ca/ca.ts";
import { readCrlDer } from "../../lib/ca/crl_file.ts";
import { revokeCertificates } from "../../lib/ca/revoke.ts";
import { makePki } from "../../testkit/pki.ts";

const PASSWORD = "correct horse battery";

async function parts(dir: string, user: string, keyOf = user, caDir = dir) {
  return {
    pkcs8: await readPrivateKeyPkcs8(`${dir}/${keyOf}.key`),
    certDer: await readCertificateDer(`${dir}/${user}.pem`),
    caDer: await readCertificateDer(`${caDir}/ca.pem`),
  };
}

const refusedWith = (code: string) => (error: unknown) => codeOf(error) === code;

Deno.test("openExportBundle() opens what encodeExportBundle() wrote: a non-extractable key that signs for the certificate", async () => {
  const pki = await makePki(["alice", "bob"]);
  try {
    const text = await encodeExportBundle(await parts(pki.dir, "alice"), PASSWORD);
    const opened = await openExportBundle(text, PASSWORD);
    assert.equal(opened.username, "alice");
    assert.equal(opened.signingKey.key.extractable, false);
    assert.deepEqual(opened.certDer, await readCertificateDer(`${pki.dir}/alice.pem`));
    assert.equal(opened.caFingerprint, pki.trust.caFingerprint);
    assert.doesNotMatch(text, /BEGIN PRIVATE KEY/, "the key is never in the clear");

    await assert.rejects(openExportBundle(text, "wrong password"), refusedWith("AUTH_FAIL"));
    // bob's certificate with alice's key: the key check catches it.
    const swapped = await encodeExportBundle(await parts(pki.dir, "bob", "alice"), PASSWORD);
    await assert.rejects(openExportBundle(swapped, PASSWORD), refusedWith("BAD_CERT"));
    // alice's certificate with another CA: it does not validate.
    const other = await makePki(["alice"]);
    try {
      const foreign = await encodeExportBundle(
        await parts(pki.dir, "alice", "alice", other.dir),
        PASSWORD,
      );
      await assert.rejects(openExportBundle(foreign, PASSWORD), refusedWith("BAD_CERT"));
    } finally {
      await Deno.remove(other.dir, { recursive: true });
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("decodeExportBundle() takes the three blocks in order, then maybe a CRL, and nothing else", async () => {
  const pki = await makePki(["alice"]);
  try {
    const p = await parts(pki.dir, "alice");
    const text = await encodeExportBundle(p, PASSWORD);
    const [key, cert, ca] = [...text.matchAll(/-----BEGIN [^]*?-----END [A-Z ]+-----\n/g)]
      .map((m) => m[0]);
    for (
      const bad of [
        "",
        key + cert,
        cert + key + ca,
        key + cert + ca + ca,
        key + cert + pemEncode("X509 CRL", p.certDer) + ca,
        pemEncode("PRIVATE KEY", p.pkcs8) + cert + ca,
        key.replace(/[A-Za-z0-9+/]{8}\n/, "!!!!!!!!\n") + cert + ca,
        "x".repeat(70_000),
      ]
    ) {
      await assert.rejects(decodeExportBundle(bad, PASSWORD), refusedWith("INVALID_INPUT"));
    }
    const decoded = await decodeExportBundle(key + cert + ca, PASSWORD);
    assert.deepEqual(decoded.certDer, p.certDer);
    assert.deepEqual(decoded.pkcs8, p.pkcs8);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("openExportBundle() takes the CA's CRL from the bundle: a revoked user's bundle and another CA's CRL are refused", async () => {
  const pki = await makePki(["alice", "bob"]);
  const other = await makePki(["carol"]);
  try {
    await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "bob", 1);
    const crlDer = (await readCrlDer(`${pki.dir}/ca.crl`))!;
    const text = await encodeExportBundle({ ...await parts(pki.dir, "alice"), crlDer }, PASSWORD);
    assert.match(text, /-----BEGIN X509 CRL-----/);
    const opened = await openExportBundle(text, PASSWORD);
    assert.deepEqual(opened.crlDer, crlDer);
    assert.equal(opened.trust.crl?.crlNumber, 1n);
    // The page refuses bob from the bundle's CRL alone.
    const bob = await readCertificateDer(`${pki.dir}/bob.pem`);
    await assert.rejects(
      validatePeerCertificate(opened.trust, bob, { role: "client" }),
      refusedWith("BAD_CERT"),
    );
    // bob's own bundle, with the CRL that revokes him: refused at opening.
    const revoked = await encodeExportBundle({ ...await parts(pki.dir, "bob"), crlDer }, PASSWORD);
    await assert.rejects(openExportBundle(revoked, PASSWORD), refusedWith("BAD_CERT"));
    // A CRL signed by another CA: refused, it cannot stand for this CA's.
    await revokeCertificates(other.dir, await loadCaSigner(other.dir), "carol", 1);
    const foreign = await encodeExportBundle(
      { ...await parts(pki.dir, "alice"), crlDer: (await readCrlDer(`${other.dir}/ca.crl`))! },
      PASSWORD,
    );
    await assert.rejects(openExportBundle(foreign, PASSWORD), refusedWith("BAD_CERT"));
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
    await Deno.remove(other.dir, { recursive: true });
  }
});
