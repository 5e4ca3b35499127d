/**
 * The server's own certificate (PROTOCOL §5.2), through real `serve` and `connect` processes:
 * `serve` refuses to start with a certificate that expired, lapses within the close margin or
 * is revoked; it warns ahead of the lapse; before it, it closes every session with receipts its
 * certificate still covers, with a code the client reports, and refuses every new connection.
 * A revocation of its certificate does the same at once. Before this, a session outlived the
 * server's certificate and its receipt was signed under a certificate that had lapsed.
 */
import assert from "node:assert/strict";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { issueCertificate } from "../lib/ca/issue.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
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
import { verifyAll } from "./helpers/verified.ts";

const PASSWORD = "a-long-password";
const DAY = 24 * 60 * 60;

/** Replaces the server certificate of `pkiDir` with one valid for `seconds` from now. */
async function serverCertFor(pkiDir: string, seconds: number): Promise<void> {
  await issueCertificate(pkiDir, await loadCaSigner(pkiDir), {
    name: "server",
    profile: "server",
    dns: ["localhost"],
    ip: ["127.0.0.1"],
    days: seconds / DAY,
    keyType: "ed25519",
  }, true);
}

Deno.test("serve refuses to start with a server certificate that expired, or lapses within the close margin", async () => {
  const pki = await makePki([]);
  try {
    await serverCertFor(pki.dir, 1);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await assert.rejects(
      ServerProcess.start({ pkiDir: pki.dir }),
      /serve exited with 1:[\s\S]*BAD_CERT: the server certificate expired at [\s\S]*hint: issue a new server certificate/,
    );
    await serverCertFor(pki.dir, 20);
    await assert.rejects(
      ServerProcess.start({ pkiDir: pki.dir }),
      /serve exited with 1:[\s\S]*BAD_CERT: the server certificate expires at .*: sessions must close 30 s before it/,
    );
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("serve: sessions close with both receipts and SERVER_CERT_EXPIRED before the server certificate lapses; then every connection is refused", async () => {
  const pki = await makePki(["alice", "bob"]);
  // The close margin is 30 s by default: the sessions close about 30 s after the issue.
  await serverCertFor(pki.dir, 60);
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const user = (name: string) => userOn(server, pki.dir, name, PASSWORD);
  try {
    const warned = await server.waitFor(logIs("CERT_EXPIRING"));
    assert.match(String(warned.detail), /the server certificate expires at .*, in \d+ s;/);
    await registerUser(server, pki.dir, "alice", PASSWORD);
    await registerUser(server, pki.dir, "bob", PASSWORD);
    const alice = await LiveClient.login(user("alice"));
    const bob = await LiveClient.login(user("bob"));
    await alice.send("alice before the lapse");
    await bob.waitForLine((l) => l.endsWith("alice \u2713 alice before the lapse"));
    const retired = await server.waitFor(logIs("SERVER_CERT_EXPIRED"), 45_000);
    assert.match(String(retired.detail), /every session is closed with receipts now/);
    for (const client of [alice, bob]) {
      const ended = await client.end();
      assert.notEqual(ended.code, 0, ended.stderr);
      assert.match(
        ended.stderr,
        /error: SERVER_CERT_EXPIRED: the server closed the session \(receipts exchanged\) because its certificate, or the CA's, is about to expire/,
      );
      assert.match(ended.stderr, /hint: the server's certificate \(or its CA's\) expires/);
      assert.doesNotMatch(ended.stderr, /reconnecting/);
    }
    // Receipts from both sides, the server's signed while its certificate was valid.
    await verifyAll(`${server.workDir}/alice`, `${pki.dir}/ca.pem`);
    await verifyAll(`${server.workDir}/bob`, `${pki.dir}/ca.pem`);
    const mark = server.mark();
    const refused = await runConnect(user("alice"));
    assert.equal(errorCodeOf(refused), "SERVER_CERT_EXPIRED", refused.stderr);
    await server.waitFor(logIs("SERVER_CERT_EXPIRED"), 10_000, mark);
    assert.equal(server.events(logIs("LOGIN"), mark).length, 0, "a session began after the lapse");
  } finally {
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("serve: a CRL revoking the server's own certificate closes its sessions with receipts (SERVER_CERT_REVOKED) and refuses new ones; serve will not start with it", async () => {
  const pki = await makePki(["alice"]);
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const user = userOn(server, pki.dir, "alice", PASSWORD);
  try {
    await registerUser(server, pki.dir, "alice", PASSWORD);
    const alice = await LiveClient.login(user);
    // A CRL dates a revocation in whole seconds: one in the session's first second would
    // predate it, and verify would rightly refuse the session's server certificate.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "server", 30);
    server.child.kill("SIGHUP");
    await server.waitFor(logIs("SERVER_CERT_REVOKED"), 15_000);
    const ended = await alice.end();
    assert.notEqual(ended.code, 0, ended.stderr);
    assert.match(ended.stderr, /error: SERVER_CERT_REVOKED: .*its certificate has been revoked/);
    assert.match(ended.stderr, /hint: the server's certificate has been revoked/);
    // Revoked after the session began: the receipts stay valid (judged by date).
    await verifyAll(`${server.workDir}/alice`, `${pki.dir}/ca.pem`);
    const refused = await runConnect(user);
    assert.equal(errorCodeOf(refused), "SERVER_CERT_REVOKED", refused.stderr);
  } finally {
    await server.dispose();
  }
  try {
    await assert.rejects(
      ServerProcess.start({ pkiDir: pki.dir }),
      /serve exited with 1:[\s\S]*BAD_CERT: the CRL in force revokes the server certificate/,
    );
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
