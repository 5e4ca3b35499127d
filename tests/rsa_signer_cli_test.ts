/**
 * RSA signing through OpenSSL's libcrypto (lib/crypto/openssl_rsa.ts), through the real CLI:
 * with the start task's flags an RSA server signs natively and says so once; without
 * `--allow-ffi` (Deno's built-in RSA, RUSTSEC-2023-0071) serve refuses to start unless told
 * `--allow-builtin-rsa`, and then warns; a client falls back with one diagnostic line.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { CLI_PERMISSIONS } from "../testkit/cli.ts";
import { errorCodeOf, logIs, runConnect, ServerProcess } from "../testkit/server_process.ts";
import { libcryptoMissing } from "./helpers/openssl.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

const ignore = skipUnless("openssl", libcryptoMissing(), "RSA signing through libcrypto");
const pki = ignore ? undefined : await makePki(["alice"], "rsa2048");
const WITHOUT_FFI = CLI_PERMISSIONS.filter((flag) => !flag.startsWith("--allow-ffi"));
const PASSWORD = "alice-rsa-passw0rd";

Deno.test({
  name: "serve and connect with the start task's flags sign RSA through libcrypto, end to end",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    assert.notEqual(
      WITHOUT_FFI.length,
      CLI_PERMISSIONS.length,
      "the start task grants --allow-ffi",
    );
    const server = await ServerProcess.start({ pkiDir: pki!.dir });
    try {
      const signer = server.events(logIs("RSA_SIGNER"));
      assert.equal(signer.length, 1, "logged once");
      assert.match(String(signer[0].detail), /^OpenSSL 3\.\S+ .*libcrypto \(\/.*libcrypto/);
      const symmetric = server.events(logIs("SYMMETRIC_CRYPTO"));
      assert.equal(symmetric.length, 1, "which library seals: logged once");
      assert.match(String(symmetric[0].detail), /^OpenSSL 3\.\S+ libcrypto$/);
      const result = await runConnect({
        port: server.port,
        user: "alice",
        password: PASSWORD,
        pkiDir: pki!.dir,
        transcripts: `${server.workDir}/alice`,
        registerEmail: "alice@example.com",
      }, ["hello over native RSA"]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /registered and logged in as alice/);
      assert.doesNotMatch(result.stderr, /RSA signing/, "the native case says nothing");
      await server.waitFor(logIs("LOGIN", { user: "alice" }));
    } finally {
      await server.dispose();
    }
  },
});

Deno.test({
  name:
    "serve with an RSA key and no libcrypto refuses to start; --allow-builtin-rsa starts, warned",
  ignore,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const refused = await ServerProcess.start({ pkiDir: pki!.dir, flags: WITHOUT_FFI }).then(
      async (server) => {
        await server.dispose();
        return undefined;
      },
      (error: Error) => error.message,
    );
    assert.ok(refused, "serve started with Deno's built-in RSA unasked");
    assert.match(refused, /exited with 1/);
    assert.match(refused, /securechat: error: UNSUPPORTED: RSA signing would use Deno's built-in/);
    assert.match(refused, /RUSTSEC-2023-0071\); no --allow-ffi for libcrypto/);
    // The hint names both fixes, and what the second costs.
    assert.match(refused, /hint: install OpenSSL 3's library \(Debian, Ubuntu: libssl3\)/);
    assert.match(refused, /or pass --allow-builtin-rsa .*~5x slower and leaking the key's timing/);

    const server = await ServerProcess.start({
      pkiDir: pki!.dir,
      flags: WITHOUT_FFI,
      args: ["--allow-builtin-rsa"],
    });
    try {
      const signer = server.events(logIs("RSA_SIGNER"));
      assert.equal(signer.length, 1, "logged once");
      assert.match(String(signer[0].detail), /^WARNING: Deno's built-in .*RUSTSEC-2023-0071/);
      // A client without --allow-ffi falls back too, and says so in one line; the chat works.
      const result = await runConnect({
        port: server.port,
        user: "alice",
        password: PASSWORD,
        pkiDir: pki!.dir,
        transcripts: `${server.workDir}/alice`,
        registerEmail: "alice@example.com",
        flags: WITHOUT_FFI,
      }, ["hello over built-in RSA"]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(errorCodeOf(result), undefined);
      const notes = result.stderr.split("\n").filter((line) => line.includes("RSA signing"));
      assert.equal(notes.length, 1, result.stderr);
      assert.match(notes[0], /^securechat: RSA signing: Deno's built-in .*no --allow-ffi/);
    } finally {
      await server.dispose();
    }
  },
});

Deno.test({
  name:
    "serve with an Ed25519 key needs no libcrypto and logs no RSA_SIGNER; SYMMETRIC_CRYPTO says the portable paths seal",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const ed25519 = await makePki([], "ed25519");
    const server = await ServerProcess.start({ pkiDir: ed25519.dir, flags: WITHOUT_FFI });
    try {
      assert.deepEqual(server.events(logIs("RSA_SIGNER")), []);
      const symmetric = server.events(logIs("SYMMETRIC_CRYPTO"));
      assert.equal(symmetric.length, 1, "which library seals: logged once");
      assert.match(String(symmetric[0].detail), /^JavaScript and node:crypto; /);
    } finally {
      await server.dispose();
      await Deno.remove(ed25519.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "rsa signer CLI test: remove its PKI",
  ignore,
  fn: async () => {
    await Deno.remove(pki!.dir, { recursive: true });
  },
});
