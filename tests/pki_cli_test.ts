/**
 * `securechat ca` and `securechat cert` through the real CLI: what they write, that
 * openssl agrees with it, and how they refuse.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { readCertificateDer } from "../lib/pki/key_files.ts";
import assert from "node:assert/strict";
import { runCli } from "../testkit/cli.ts";
import { openssl } from "./helpers/openssl.ts";
import { validatePeerCertificate } from "../lib/pki/validate.ts";

async function cli(cwd: string, ...args: string[]) {
  const result = await runCli(args, { cwd });
  assert.doesNotMatch(
    result.stdout + result.stderr,
    /PRIVATE KEY/,
    "no command prints a private key",
  );
  return result;
}

async function okCli(cwd: string, ...args: string[]) {
  const result = await cli(cwd, ...args);
  assert.equal(result.code, 0, `securechat ${args.join(" ")}: ${result.stderr}`);
  return result;
}

const mode = async (path: string) => (await Deno.stat(path)).mode! & 0o777;

for (const keyType of ["rsa2048", "ed25519", "p256"]) {
  Deno.test(`ca init and cert issue (${keyType}) make certificates openssl verifies`, async () => {
    const cwd = await Deno.makeTempDir();
    const init = await okCli(cwd, "ca", "init", "--key-type", keyType);
    assert.match(init.stdout, /Fingerprint: sha256:[0-9a-f]{64}\n/);
    assert.match(init.stderr, /NOT encrypted/);
    const issued = await okCli(cwd, "cert", "issue", "srv", "--server", "--key-type", keyType);
    assert.match(issued.stdout, /Fingerprint: sha256:/);
    await okCli(cwd, "cert", "issue", "alice", "--key-type", keyType);

    for (const [file, purpose] of [["srv.pem", "sslserver"], ["alice.pem", "sslclient"]]) {
      const v = await openssl(
        cwd,
        "verify",
        "-CAfile",
        "certs/ca.pem",
        "-purpose",
        purpose,
        `certs/${file}`,
      );
      assert.equal(v.code, 0, v.stdout + v.stderr);
    }
    const wrongPurpose = await openssl(
      cwd,
      "verify",
      "-CAfile",
      "certs/ca.pem",
      "-purpose",
      "sslserver",
      "certs/alice.pem",
    );
    assert.notEqual(wrongPurpose.code, 0, "a client certificate is not a server certificate");

    const caText = (await openssl(cwd, "x509", "-in", "certs/ca.pem", "-noout", "-text")).stdout;
    assert.match(caText, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(caText, /Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(caText, /Subject Key Identifier/);
    const srvText = (await openssl(cwd, "x509", "-in", "certs/srv.pem", "-noout", "-text")).stdout;
    assert.match(srvText, /Basic Constraints: critical\s+CA:FALSE/);
    assert.match(srvText, /Key Usage: critical\s+Digital Signature\n/);
    assert.match(srvText, /Extended Key Usage: \s+TLS Web Server Authentication/);
    assert.match(srvText, /DNS:localhost, IP Address:127\.0\.0\.1/);
    assert.match(srvText, /Authority Key Identifier/);
    assert.match(srvText, /Subject: CN = srv/);
    const aliceText =
      (await openssl(cwd, "x509", "-in", "certs/alice.pem", "-noout", "-text")).stdout;
    assert.match(aliceText, /TLS Web Client Authentication/);
    assert.match(aliceText, /Subject: CN = alice/);

    const store = await loadTrustStore(`${cwd}/certs/ca.pem`);
    await validatePeerCertificate(store, await readCertificateDer(`${cwd}/certs/srv.pem`), {
      role: "server",
      expectedName: "localhost",
    });
    await validatePeerCertificate(store, await readCertificateDer(`${cwd}/certs/alice.pem`), {
      role: "client",
      expectedName: "alice",
    });

    assert.equal(await mode(`${cwd}/certs`), 0o700);
    for (const key of ["ca.key", "srv.key", "alice.key"]) {
      assert.equal(await mode(`${cwd}/certs/${key}`), 0o600);
    }
  });
}

Deno.test("ca init --password-file encrypts ca.key as openssl-readable PBES2", async () => {
  const cwd = await Deno.makeTempDir();
  await Deno.writeTextFile(`${cwd}/pw`, "correct horse\n");
  await Deno.writeTextFile(`${cwd}/bad`, "wrong horse\n");
  const init = await okCli(cwd, "ca", "init", "--key-type", "p256", "--password-file", "pw");
  assert.doesNotMatch(init.stderr, /NOT encrypted/);
  assert.match(await Deno.readTextFile(`${cwd}/certs/ca.key`), /BEGIN ENCRYPTED PRIVATE KEY/);
  const asn1 = (await openssl(cwd, "asn1parse", "-in", "certs/ca.key")).stdout;
  for (const alg of ["PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"]) {
    assert.match(asn1, new RegExp(alg));
  }
  assert.equal(
    (await openssl(cwd, "pkey", "-in", "certs/ca.key", "-passin", "file:pw", "-noout")).code,
    0,
  );
  assert.notEqual(
    (await openssl(cwd, "pkey", "-in", "certs/ca.key", "-passin", "file:bad", "-noout")).code,
    0,
  );

  await okCli(cwd, "cert", "issue", "alice", "--password-file", "pw");
  const wrong = await cli(cwd, "cert", "issue", "bob", "--password-file", "bad");
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /AUTH_FAIL: wrong password/);
  const none = await cli(cwd, "cert", "issue", "carol");
  assert.equal(none.code, 2, "no password and no terminal is a usage error");
  assert.match(none.stderr, /--password-file/);
  await okCli(cwd, "cert", "revoke", "alice", "--password-file", "pw");
  assert.notEqual((await cli(cwd, "cert", "revoke", "alice", "--password-file", "bad")).code, 0);
});

Deno.test("ca init and cert issue refuse to overwrite without --force, leaving files intact", async () => {
  const cwd = await Deno.makeTempDir();
  await okCli(cwd, "ca", "init", "--key-type", "ed25519");
  await okCli(cwd, "cert", "issue", "alice", "--key-type", "ed25519");
  const files = ["ca.pem", "ca.key", "alice.pem", "alice.key"];
  const before = await Promise.all(files.map((f) => Deno.readFile(`${cwd}/certs/${f}`)));
  const again = await cli(cwd, "ca", "init", "--key-type", "ed25519");
  assert.equal(again.code, 2);
  assert.match(again.stderr, /already exists/);
  assert.equal((await cli(cwd, "cert", "issue", "alice", "--key-type", "ed25519")).code, 2);
  const after = await Promise.all(files.map((f) => Deno.readFile(`${cwd}/certs/${f}`)));
  assert.deepEqual(after, before);
  await okCli(cwd, "ca", "init", "--key-type", "ed25519", "--force");
  assert.notDeepEqual(await Deno.readFile(`${cwd}/certs/ca.pem`), before[0]);
});

Deno.test("cert revoke, cert list and cert show report certificates in human terms", async () => {
  const cwd = await Deno.makeTempDir();
  await okCli(cwd, "ca", "init", "--key-type", "p256");
  await okCli(cwd, "cert", "issue", "alice", "--key-type", "p256");
  await okCli(
    cwd,
    "cert",
    "issue",
    "chat",
    "--server",
    "--dns",
    "chat.example.com",
    "--ip",
    "10.1.2.3",
    "--key-type",
    "p256",
  );
  await okCli(cwd, "cert", "revoke", "alice");
  const crl = (await openssl(cwd, "crl", "-in", "certs/ca.crl", "-noout", "-text")).stdout;
  assert.match(crl, /CRL Number/);
  assert.match(crl, /Next Update/);
  const list = (await okCli(cwd, "cert", "list")).stdout;
  assert.match(list, /alice\s+[0-9a-f]{32}\s+client\s+\d{4}-\d\d-\d\d\s+revoked/);
  assert.match(list, /chat\s+[0-9a-f]{32}\s+server\s+\d{4}-\d\d-\d\d\s+valid/);
  const show = (await okCli(cwd, "cert", "show", "certs/chat.pem")).stdout;
  for (
    const line of [
      /Subject:\s+CN=chat/,
      /Issuer:\s+CN=SecureChat Root CA/,
      /SANs:\s+DNS:chat\.example\.com, IP:10\.1\.2\.3/,
      /EKU:\s+serverAuth/,
      /Key:\s+ECDSA P-256/,
      /Serial:/,
      /Valid until:/,
      /Fingerprint:\s+sha256:[0-9a-f]{64}/,
    ]
  ) {
    assert.match(show, line);
  }
  const openssl256 =
    (await openssl(cwd, "x509", "-in", "certs/chat.pem", "-noout", "-fingerprint", "-sha256"))
      .stdout;
  const opensslHex = openssl256.split("=")[1].trim().replaceAll(":", "").toLowerCase();
  assert.ok(show.includes(`sha256:${opensslHex}`), "same fingerprint as openssl");
});

const USAGE_ERRORS: { name: string; args: string[] }[] = [
  { name: "an unknown flag", args: ["ca", "init", "--bogus"] },
  { name: "a missing name", args: ["cert", "issue"] },
  { name: "a missing revoke target", args: ["cert", "revoke"] },
  { name: "a path in the name", args: ["cert", "issue", "../evil"] },
  { name: "a too-short name", args: ["cert", "issue", "ab"] },
  { name: "an unknown key type", args: ["ca", "init", "--key-type", "dsa"] },
  { name: "a bad --days", args: ["ca", "init", "--days", "0"] },
  { name: "--server with --client", args: ["cert", "issue", "xyz", "--server", "--client"] },
];

for (const c of USAGE_ERRORS) {
  Deno.test(`securechat ${c.args.slice(0, 2).join(" ")} exits 2 on ${c.name}`, async () => {
    const cwd = await Deno.makeTempDir();
    if (c.args[0] === "cert") await okCli(cwd, "ca", "init", "--key-type", "p256");
    const result = await cli(cwd, ...c.args);
    assert.equal(result.code, 2, result.stderr);
    assert.ok(!(await Deno.stat(`${cwd}/certs/evil.pem`).catch(() => null)));
  });
}
