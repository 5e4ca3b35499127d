/**
 * Issue 17 item 3 through the real CLI: `connect` checks before it dials what can be
 * checked here (certificate and key belong together, the certificate is valid now under
 * the CA and its CRL, it is this user's, the password keeps the rules), and every code
 * the server sends comes with one sentence saying what to do next. A server shutdown
 * tells the clients why.
 */
import assert from "node:assert/strict";
import { makeBadCertPki } from "./helpers/cert_fixtures.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
import {
  errorCodeOf,
  LiveClient,
  registerUser,
  runConnect,
  ServerProcess,
} from "../testkit/server_process.ts";

const { pki, other } = await makeBadCertPki(["alice", "bob", "carol", "dave"]);

/** A port nothing listens on: a check that dialled would fail "cannot connect" instead. */
function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

interface LocalCase {
  name: string;
  user: string;
  cert?: string;
  key?: string;
  password?: string;
  register?: boolean;
  code: string;
  message: RegExp;
  hint: RegExp;
}

const LOCAL_CASES: LocalCase[] = [
  {
    name: "a key that is not the certificate's",
    user: "alice",
    key: "bob",
    code: "BAD_CERT",
    message: /bob\.key is not the key of .*alice\.pem/,
    hint: /the \.key file written together with this \.pem/,
  },
  {
    name: "another user's certificate",
    user: "bob",
    cert: "alice",
    key: "alice",
    code: "BAD_CERT",
    message: /certificate is for user "alice", not "bob"/,
    hint: /log in as the certificate's user/,
  },
  {
    name: "an expired certificate",
    user: "alice",
    cert: "expired-alice",
    key: "expired-alice",
    code: "BAD_CERT",
    message: /has expired/,
    hint: /cert issue alice --force/,
  },
  {
    name: "a certificate from another CA",
    user: "alice",
    cert: "other-alice",
    key: "other-alice",
    code: "BAD_CERT",
    message: /not issued by a trusted CA/,
    hint: /from the same operator/,
  },
  {
    name: "no certificate for the user",
    user: "zoe",
    code: "IO_ERROR",
    message: /no certificate for zoe at/,
    hint: /cert issue zoe/,
  },
  {
    name: "an empty password",
    user: "alice",
    password: "",
    code: "USAGE",
    message: /no password|password is empty/,
    hint: /SECURECHAT_PASSWORD|--password-file/,
  },
  {
    name: "a short password at registration",
    user: "alice",
    password: "short",
    register: true,
    code: "USAGE",
    message: /password must be 8 to 1024 bytes/,
    hint: /longer password/,
  },
];

Deno.test("connect: local mistakes are named before dialling, each with the next step", async (t) => {
  const port = deadPort();
  for (const c of LOCAL_CASES) {
    await t.step(c.name, async () => {
      const result = await runConnect({
        port,
        user: c.user,
        password: c.password ?? "a-good-password-1",
        pkiDir: pki.dir,
        cert: `${pki.dir}/${c.cert ?? c.user}.pem`,
        key: `${pki.dir}/${c.key ?? c.user}.key`,
        transcripts: `${pki.dir}/t`,
        registerEmail: c.register ? "a@example.com" : undefined,
      });
      assert.equal(errorCodeOf(result), c.code, result.stderr);
      assert.match(result.stderr, c.message);
      assert.match(result.stderr, new RegExp(`hint: .*${c.hint.source}`));
      assert.doesNotMatch(result.stderr, /cannot connect/, "it did not dial");
    });
  }
});

Deno.test({
  name: "connect: the server's refusals come with what to do; a shutdown says why",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const server = await ServerProcess.start({ pkiDir: pki.dir });
    const login = (user: string, password: string, email?: string) =>
      runConnect({
        port: server.port,
        user,
        password,
        pkiDir: pki.dir,
        transcripts: `${server.workDir}/c`,
        registerEmail: email,
      });
    try {
      await registerUser(server, pki.dir, "alice", "alice-password-1");
      await t.step("a wrong password: AUTH_FAIL, and how to reset it", async () => {
        const result = await login("alice", "not-her-password");
        assert.equal(errorCodeOf(result), "AUTH_FAIL", result.stderr);
        assert.match(result.stderr, /hint: the server refused the user name or password/);
        assert.match(result.stderr, /securechat user passwd NAME/);
      });
      await t.step("registering a taken name: USER_EXISTS, log in instead", async () => {
        const result = await login("alice", "alice-password-1", "alice2@example.com");
        assert.equal(errorCodeOf(result), "USER_EXISTS", result.stderr);
        assert.match(result.stderr, /hint: .*log in without --register/);
      });
      await t.step("a revoked certificate is refused before dialling", async () => {
        await registerUser(server, pki.dir, "carol", "carol-password-1");
        await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "carol", 30);
        const result = await login("carol", "carol-password-1");
        assert.equal(errorCodeOf(result), "BAD_CERT", result.stderr);
        assert.match(result.stderr, /certificate is revoked/);
        assert.match(result.stderr, /hint: it was revoked: ask the operator for a new one/);
      });
      await t.step("a server shutdown tells the client why, and it closes cleanly", async () => {
        await registerUser(server, pki.dir, "dave", "dave-password-1");
        const dave = await LiveClient.login({
          port: server.port,
          user: "dave",
          password: "dave-password-1",
          pkiDir: pki.dir,
          transcripts: `${server.workDir}/dave`,
        });
        await server.stop();
        const end = await dave.end();
        assert.equal(end.code, 0, end.stderr);
        assert.match(end.stdout, /\* the server is shutting down/);
        assert.match(end.stderr, /server's receipt:/);
      });
    } finally {
      await server.dispose();
    }
  },
});

globalThis.addEventListener("unload", () => {
  for (const dir of [pki.dir, other.dir]) Deno.removeSync(dir, { recursive: true });
});
