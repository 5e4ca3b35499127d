/**
 * `securechat cert export NAME`: a 0600 bundle the page opens, under a password that meets
 * the account rules, never over an existing file unless --force, with the CA's CRL when the
 * PKI directory has one.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openExportBundle } from "../lib/pki/export_bundle.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";

Deno.test("cert export: a 0600 bundle that opens as the user; short passwords and overwrites refused", async () => {
  const pki = await makePki(["alice", "bob"]);
  const work = await Deno.makeTempDir({ prefix: "securechat-export-" });
  try {
    const out = join(work, "alice.bundle.pem");
    const exportWith = async (password: string, ...extra: string[]) => {
      await Deno.writeTextFile(join(work, "password"), `${password}\n`);
      return await runCli([
        "cert",
        "export",
        "alice",
        "--dir",
        pki.dir,
        "--out",
        out,
        "--password-file",
        join(work, "password"),
        ...extra,
      ]);
    };
    const short = await exportWith("short");
    assert.equal(short.code, 2, short.stderr);
    assert.match(short.stderr, /password must be/);

    const made = await exportWith("a long enough passphrase");
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stderr, /CA fingerprint sha256:[0-9a-f]{64}/);
    assert.equal((await Deno.stat(out)).mode! & 0o777, 0o600);
    const opened = await openExportBundle(await Deno.readTextFile(out), "a long enough passphrase");
    assert.equal(opened.username, "alice");
    assert.equal(opened.crlDer, undefined, "no ca.crl yet: no CRL in the bundle");

    const again = await exportWith("a long enough passphrase");
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /exists/);
    const forced = await exportWith("another long passphrase", "--force");
    assert.equal(forced.code, 0, forced.stderr);
    await openExportBundle(await Deno.readTextFile(out), "another long passphrase");

    // Once the CA has revoked someone, the bundle carries its CRL: the page refuses them.
    await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "bob", 1);
    const withCrl = await exportWith("another long passphrase", "--force");
    assert.equal(withCrl.code, 0, withCrl.stderr);
    assert.match(withCrl.stderr, /the CA and its CRL/);
    const reopened = await openExportBundle(
      await Deno.readTextFile(out),
      "another long passphrase",
    );
    assert.equal(reopened.trust.crl?.crlNumber, 1n);
  } finally {
    await Deno.remove(work, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
});
