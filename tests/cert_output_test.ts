/**
 * Issue 17 item 6 through the real CLI: one format for serials and fingerprints in
 * `ca init`, `cert issue`, `cert list`, `cert show` and `verify`; `cert show NAME` as well
 * as a path; `--json` on `cert list` and `cert show`; a revoked certificate says so.
 */
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";

async function ok(cwd: string, ...args: string[]) {
  const result = await runCli(args, { cwd });
  assert.equal(result.code, 0, `securechat ${args.join(" ")}:\n${result.stderr}`);
  return result;
}

Deno.test("cert: serials and fingerprints print alike everywhere; show by name; --json; revoked", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    const init = await ok(cwd, "ca", "init", "--key-type", "ed25519");
    const caFingerprint = /Fingerprint: (sha256:[0-9a-f]{64})$/m.exec(init.stdout)?.[1];
    assert.ok(caFingerprint, init.stdout);
    const issued = await ok(cwd, "cert", "issue", "alice", "--key-type", "ed25519");
    const serial = /serial ([0-9a-f]+)\)/.exec(issued.stderr)?.[1];
    const fingerprint = /Fingerprint: (sha256:[0-9a-f]{64})$/m.exec(issued.stdout)?.[1];
    assert.ok(serial && fingerprint, issued.stdout + issued.stderr);

    const listed = JSON.parse((await ok(cwd, "cert", "list", "--json")).stdout);
    assert.deepEqual(listed.map((e: { name: string }) => e.name), ["alice"]);
    assert.equal(listed[0].serial, serial);
    assert.equal(listed[0].fingerprint, fingerprint);
    assert.equal(listed[0].status, "valid");
    assert.match((await ok(cwd, "cert", "list")).stdout, new RegExp(`alice +${serial} +client`));

    const byName = (await ok(cwd, "cert", "show", "alice")).stdout;
    assert.equal(byName, (await ok(cwd, "cert", "show", "certs/alice.pem")).stdout);
    assert.match(byName, new RegExp(`^Serial: +${serial}$`, "m"));
    assert.match(byName, new RegExp(`^Fingerprint: +${fingerprint}$`, "m"));
    assert.match(byName, /^Status: +valid$/m);
    const ca = JSON.parse((await ok(cwd, "cert", "show", "certs/ca.pem", "--json")).stdout);
    assert.equal(ca.fingerprint, caFingerprint);

    await ok(cwd, "cert", "revoke", "alice");
    const revoked = JSON.parse((await ok(cwd, "cert", "show", "alice", "--json")).stdout);
    assert.equal(revoked.status, "revoked");
    assert.ok(!Number.isNaN(Date.parse(revoked.revokedAt)));
    assert.match((await ok(cwd, "cert", "show", "alice")).stdout, /^Status: +revoked \d{4}-/m);
    const missing = await runCli(["cert", "show", "nobody"], { cwd });
    assert.equal(missing.code, 2, missing.stderr);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
