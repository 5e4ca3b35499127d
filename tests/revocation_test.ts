/**
 * Issue 11 item 2: revocation reaches a running server. `serve` follows the CRL file
 * (every 5 s, and on SIGHUP), validates a new CRL before adopting it, ends the live
 * sessions of newly revoked certificates with REVOKED, says at start when revocation is
 * off, and warns before the CRL lapses. v1 read ca.crl once, at start.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import assert from "node:assert/strict";
import { codeOf } from "../lib/errors.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { readInventory } from "../lib/ca/inventory.ts";
import { revokeCertificates, writeCrl } from "../lib/ca/revoke.ts";
import { issueCertificate } from "../lib/ca/issue.ts";
import { verifyAll } from "./helpers/verified.ts";
import { runCli } from "../testkit/cli.ts";
import { makePki } from "../testkit/pki.ts";
import {
  errorCodeOf,
  LiveClient,
  logIs,
  registerUser,
  runConnect,
  ServerProcess,
  userOn,
} from "../testkit/server_process.ts";

const PASSWORD = "a-long-password";
const DAY = 24 * 60 * 60;

Deno.test("TrustStore.updateCrl() adopts a newer CRL and refuses a bad, older or lapsed one, keeping the old", async () => {
  const pki = await makePki(["alice", "bob"]);
  try {
    const ca = await loadCaSigner(pki.dir);
    const crlAt = async (revoke?: string, days = 30) => {
      if (revoke) await revokeCertificates(pki.dir, ca, revoke, days);
      else await writeCrl(pki.dir, ca, await readInventory(pki.dir), days);
      return await Deno.readTextFile(`${pki.dir}/ca.crl`);
    };
    const first = await crlAt();
    const trust = await loadTrustStore(`${pki.dir}/ca.pem`);
    assert.equal(await trust.updateCrl(first), null, "the CRL already in force");
    const serial = (await readInventory(pki.dir)).certificates.find((e) =>
      e.name === "bob"
    )!.serial;
    const second = await crlAt("bob");
    assert.deepEqual(await trust.updateCrl(second), new Set([serial]));
    assert.ok(trust.isRevoked(serial));
    const refusals: [string, string | Promise<string>, string][] = [
      ["older", first, "STALE"],
      ["garbage", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "BAD_CERT"],
      [
        "lapsed",
        crlAt(undefined, 1 / DAY).then(async (pem) => {
          await new Promise((resolve) => setTimeout(resolve, 1500));
          return pem;
        }),
        "BAD_CERT",
      ],
    ];
    for (const [what, pem, code] of refusals) {
      const error = await trust.updateCrl(await pem).then(() => undefined, (e) => e);
      assert.equal(codeOf(error), code, what);
      assert.ok(trust.isRevoked(serial), `the CRL in force stays after the ${what} one`);
    }
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("serve: cert revoke ends the live session of the revoked user with REVOKED, without a restart", async () => {
  const pki = await makePki(["alice", "carol"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const user = (name: string) => userOn(server, pki.dir, name, PASSWORD);
  try {
    // No ca.crl yet: v1 was silently without revocation.
    const off = await server.waitFor(logIs("REVOCATION_OFF"), 5000);
    assert.match(String(off.detail), /revoked certificates are NOT refused/);
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "carol", PASSWORD);
    const alice = await LiveClient.login(user("alice"));
    const carol = await LiveClient.login(user("carol"));
    const mark = server.mark();
    const revoked = await runCli(["cert", "revoke", "carol", "--dir", pki.dir]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stderr, /picks it up within 5 seconds \(at once on SIGHUP\)/);
    const loaded = await server.waitFor(logIs("CRL_LOADED"), 15_000, mark);
    assert.equal(loaded.newly_revoked, 1);
    await server.waitFor(logIs("REVOKED", { user: "carol" }), 5000, mark);
    const ended = await carol.end();
    assert.notEqual(ended.code, 0);
    assert.match(ended.stderr, /REVOKED/);
    // alice is untouched; carol cannot come back.
    const from = alice.stdout.length;
    await alice.send("/who");
    await alice.waitForLine((l) => l.includes("* online: alice"), 10_000, from);
    assert.equal(errorCodeOf(await runConnect(user("carol"))), "BAD_CERT");
    assert.equal((await alice.end()).code, 0);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("serve: a bad or older CRL is refused and logged; a lapse is reported, and a fresh CRL ends it on SIGHUP", async () => {
  const pki = await makePki(["alice"]);
  const ca = await loadCaSigner(pki.dir);
  const crlFile = `${pki.dir}/ca.crl`;
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    // CRLs #1 and #2, both lapsing 10 seconds from now; #2 is put in place.
    await writeCrl(pki.dir, ca, await readInventory(pki.dir), 10 / DAY);
    const first = await Deno.readTextFile(crlFile);
    await writeCrl(pki.dir, ca, await readInventory(pki.dir), 10 / DAY);
    await server.waitFor(logIs("CRL_LOADED", { number: "2" }), 15_000);
    await server.waitFor(logIs("CRL_LAPSING"), 5000);
    let mark = server.mark();
    await Deno.writeTextFile(crlFile, "not a CRL\n");
    const bad = await server.waitFor(logIs("CRL_REFUSED"), 15_000, mark);
    assert.match(String(bad.detail), /the CRL in force stays/);
    mark = server.mark();
    await Deno.writeTextFile(crlFile, first);
    const older = await server.waitFor(logIs("CRL_REFUSED"), 15_000, mark);
    assert.match(String(older.detail), /CRL number 1 is older than the one in force \(2\)/);
    // v1 refused every login after nextUpdate until a restart, whatever the file held.
    await server.waitFor(logIs("CRL_LAPSED"), 15_000);
    const alice = {
      port: server.port,
      user: "alice",
      password: PASSWORD,
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/alice`,
    };
    assert.equal(errorCodeOf(await runConnect(alice)), "BAD_CERT");
    // Marked before the file changes: the 5-second check may adopt CRL 3 before the SIGHUP
    // (while `cert crl` still writes its inventory), and a marked-after wait then never saw it.
    mark = server.mark();
    const refreshed = await runCli(["cert", "crl", "--dir", pki.dir]);
    assert.equal(refreshed.code, 0, refreshed.stderr);
    server.child.kill("SIGHUP");
    await server.waitFor(logIs("CRL_LOADED", { number: "3" }), 10_000, mark);
    const back = await runConnect(alice);
    assert.equal(back.code, 0, back.stderr);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("cert list says when revocation is off and warns before the CRL lapses", async () => {
  const pki = await makePki(["alice"]);
  try {
    const list = () => runCli(["cert", "list", "--dir", pki.dir]);
    assert.match((await list()).stderr, /no .*ca\.crl: servers refuse no certificate as revoked/);
    const ca = await loadCaSigner(pki.dir);
    await writeCrl(pki.dir, ca, await readInventory(pki.dir), 3);
    assert.match(
      (await list()).stderr,
      /warning: .*ca\.crl lapses \d{4}-\d\d-\d\d \(in 2 days\): .*run `securechat cert crl` now/,
    );
    await writeCrl(pki.dir, ca, await readInventory(pki.dir), 30);
    assert.match((await list()).stderr, /ca\.crl: number 2, next update .* \(in 29 days\)/);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("serve: a session ends with BAD_CERT when its certificate expires; nothing after reaches anyone (interop finding 44)", async () => {
  // With each author's certificate checked once per recipient session (PROTOCOL §6.4.1), a
  // session outliving its certificate had its lines relayed, and every transcript holding
  // them failed verify (BAD_CERT at the line): the server now ends the session at expiry.
  const pki = await makePki(["alice", "bob"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const user = (name: string) => userOn(server, pki.dir, name, PASSWORD);
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "bob", PASSWORD);
    // bob's certificate now lapses 20 s from its issue.
    const ca = await loadCaSigner(pki.dir);
    await issueCertificate(pki.dir, ca, {
      name: "bob",
      profile: "client",
      dns: [],
      ip: [],
      days: 20 / DAY,
      keyType: "ed25519",
    }, true);
    const alice = await LiveClient.login(user("alice"));
    const bob = await LiveClient.login(user("bob"));
    await bob.send("bob while valid");
    await alice.waitForLine((l) => l.endsWith("bob \u2713 bob while valid"));
    const expired = await server.waitFor(logIs("BAD_CERT", { user: "bob" }), 30_000);
    assert.match(String(expired.detail), /certificate expired/);
    const ended = await bob.end();
    assert.notEqual(ended.code, 0);
    assert.match(ended.stderr, /error: BAD_CERT: peer ended the session: BAD_CERT/);
    assert.match(ended.stderr, /hint: the server refused your certificate \(expired/);
    assert.equal((await alice.end()).code, 0);
    await verifyAll(`${server.workDir}/alice`, `${pki.dir}/ca.pem`);
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
