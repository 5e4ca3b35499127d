/**
 * Bad certificates on either side are refused with BAD_CERT (PROTOCOL §5 client step 3,
 * server step 4), through the real `serve` and `connect`. The fixtures come from
 * tests/helpers/cert_fixtures.ts (openssl `ca`/`req -x509` and a second lib/pki CA);
 * openssl-made control certificates are accepted, so each refusal is down to the one
 * defect its certificate has. bob, an honest user, stays logged in throughout. `serve` refuses
 * to start with an expired or not yet valid certificate of its own (PROTOCOL §5.2): for those
 * two, the test checks that refusal and a handshake-only server presents the certificate.
 */
import assert from "node:assert/strict";
import type { CliResult } from "../testkit/cli.ts";
import { makeBadCertPki } from "./helpers/cert_fixtures.ts";
import { errorCodeOf, registerUser, runConnect, ServerProcess } from "../testkit/server_process.ts";
import { startSharedServer } from "./helpers/shared_server.ts";
import { HandshakeOnlyServer } from "./helpers/handshake_only_server.ts";
import { loadIdentity } from "../lib/identity.ts";

const fixtures = await makeBadCertPki(["alice", "bob"]);
const { pki } = fixtures;
const PASSWORDS: Record<string, string> = { alice: "alice-password-1", bob: "bob-password-1" };
const shared = await startSharedServer({
  pkiDir: pki.dir,
  alsoRemove: [fixtures.other.dir],
  users: PASSWORDS,
});
const { server } = shared;
const clientDir = `${server.workDir}/clients`;
const bystander = () => shared.bystander("bob", PASSWORDS.bob);

/** The code `serve` logged for the connection that failed, by the first event after `from`. */
async function loggedCode(
  s: Pick<ServerProcess, "waitFor">,
  from: number,
): Promise<{ event: string; detail?: string }> {
  return await s.waitFor(
    (e) => !["CONNECT", "LOGIN", "CLOSE", "SESSION_REPLACED"].includes(e.event),
    10_000,
    from,
  );
}

interface ClientCertCase {
  name: string;
  /** File stem of the certificate the client presents. */
  cert: string;
  user: string;
  password: string;
  /** The code both sides must report; null: the login must succeed (a control case). */
  code: string | null;
  /** The server log's detail must say why. */
  detail?: RegExp;
}

Deno.test({
  name: "the server refuses bad client certificates (BAD_CERT), and a CN ≠ user (AUTH_FAIL)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cases: ClientCertCase[] = [
      {
        name: "control: openssl-issued alice",
        cert: "ossl-good",
        user: "alice",
        password: PASSWORDS.alice,
        code: null,
      },
      {
        name: "self-signed",
        cert: "self-alice",
        user: "alice",
        password: PASSWORDS.alice,
        code: "BAD_CERT",
        detail: /not issued by a trusted CA/,
      },
      {
        name: "issued by another CA",
        cert: "other-alice",
        user: "alice",
        password: PASSWORDS.alice,
        code: "BAD_CERT",
        detail: /not issued by a trusted CA/,
      },
      {
        name: "expired (2020-01-01 .. 2020-02-01)",
        cert: "expired-alice",
        user: "alice",
        password: PASSWORDS.alice,
        code: "BAD_CERT",
        detail: /expired/,
      },
      {
        name: "not yet valid (from 10 days ahead)",
        cert: "future-alice",
        user: "alice",
        password: PASSWORDS.alice,
        code: "BAD_CERT",
        detail: /not yet valid/,
      },
      {
        name: "wrong role: the server's certificate used by a client",
        cert: "server",
        user: "server",
        password: "server-password-1",
        code: "BAD_CERT",
        detail: /clientAuth/,
      },
      {
        name: "CN alice, --user bob (with bob's password)",
        cert: "alice",
        user: "bob",
        password: PASSWORDS.bob,
        code: "AUTH_FAIL",
      },
    ];
    const bob = await bystander();
    try {
      for (const c of cases) {
        await t.step(`${c.name} → ${c.code ?? "accepted"}`, async () => {
          const from = server.mark();
          const result = await runConnect({
            port: server.port,
            user: c.user,
            password: c.password,
            pkiDir: pki.dir,
            cert: `${pki.dir}/${c.cert}.pem`,
            key: `${pki.dir}/${c.cert}.key`,
            transcripts: clientDir,
            // connect would refuse these itself (tests/connect_errors_test.ts); here the
            // server must.
            args: ["--no-preflight"],
          }, ["/who"]);
          if (c.code === null) {
            assert.equal(result.code, 0, result.stderr);
            await server.waitFor((e) => e.event === "LOGIN" && e.user === c.user, 10_000, from);
            return;
          }
          assert.equal(result.code, 1, result.stderr);
          assertClientCode(result, c.code);
          const logged = await loggedCode(server, from);
          assert.equal(logged.event, c.code, JSON.stringify(logged));
          if (c.detail) assert.match(String(logged.detail), c.detail);
          assert.equal(server.events((e) => e.event === "LOGIN", from).length, 0);
        });
      }
      await t.step(
        "the client is told why: 5 × expired certificate all exit with BAD_CERT",
        async () => {
          const codes: (string | undefined)[] = [];
          for (let i = 0; i < 5; i++) {
            const result = await runConnect({
              port: server.port,
              user: "alice",
              password: PASSWORDS.alice,
              pkiDir: pki.dir,
              cert: `${pki.dir}/expired-alice.pem`,
              key: `${pki.dir}/expired-alice.key`,
              transcripts: clientDir,
              args: ["--no-preflight"],
            }, ["/who"]);
            codes.push(errorCodeOf(result));
          }
          assert.deepEqual(codes, Array(5).fill("BAD_CERT"));
        },
      );
    } finally {
      await bob.finish();
    }
  },
});

/**
 * The client must exit with the server's code, even when one of its pipelined writes
 * failed first (tests/unit/handshake_refusal_test.ts reproduces that race).
 */
function assertClientCode(result: CliResult, code: string): void {
  assert.equal(errorCodeOf(result), code, result.stderr);
}

interface ServerCertCase {
  name: string;
  /** File stem of the certificate `serve` presents (null: the good server). */
  cert: string | null;
  serverName?: string;
  code: string | null;
  /** What the client says on stderr, to show the refusal has the right reason. */
  reason?: RegExp;
  /**
   * `serve` refuses to start with this certificate, saying this (PROTOCOL §5.2): a server that
   * runs the handshake alone presents it instead, as one with a wrong clock could.
   */
  serveRefuses?: RegExp;
}

Deno.test({
  name: "the client refuses bad server certificates (BAD_CERT) and the server logs it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cases: ServerCertCase[] = [
      { name: "control: openssl-issued server certificate", cert: "ossl-server", code: null },
      { name: "self-signed", cert: "self-server", code: "BAD_CERT", reason: /trusted CA/ },
      {
        name: "issued by another CA",
        cert: "other-server",
        code: "BAD_CERT",
        reason: /trusted CA/,
      },
      {
        name: "expired",
        cert: "expired-server",
        code: "BAD_CERT",
        reason: /expired/,
        serveRefuses: /BAD_CERT: the server certificate expired at 2020-02-01/,
      },
      {
        name: "not yet valid",
        cert: "future-server",
        code: "BAD_CERT",
        reason: /not yet valid/,
        serveRefuses: /BAD_CERT: the server certificate \(or the CA's\) is not valid until/,
      },
      {
        name: "wrong role: a client certificate used by the server",
        cert: "alice",
        code: "BAD_CERT",
        reason: /serverAuth/,
      },
      {
        name: "wrong name: SAN other.example only, dialled localhost",
        cert: "wrongname-server",
        code: "BAD_CERT",
        reason: /server name/,
      },
      {
        name: "wrong name: the good server dialled as --server-name other.example",
        cert: null,
        serverName: "other.example",
        code: "BAD_CERT",
        reason: /server name/,
      },
    ];
    const servers = new Map<string, ServerProcess | HandshakeOnlyServer>();
    const bob = await bystander();
    try {
      await Promise.all(
        cases.filter((c) => c.cert !== null).map(async (c) => {
          const start = ServerProcess.start({
            pkiDir: pki.dir,
            cert: `${c.cert}.pem`,
            key: `${c.cert}.key`,
          });
          if (!c.serveRefuses) return void servers.set(c.cert!, await start);
          await assert.rejects(start, c.serveRefuses);
          const identity = await loadIdentity(
            `${pki.dir}/${c.cert}.pem`,
            `${pki.dir}/${c.cert}.key`,
          );
          servers.set(c.cert!, new HandshakeOnlyServer(identity, pki.trust));
        }),
      );
      for (const c of cases) {
        await t.step(`${c.name} → ${c.code ?? "accepted"}`, async () => {
          const s = c.cert === null ? server : servers.get(c.cert)!;
          if (c.code === null) {
            assert.ok(s instanceof ServerProcess, "the control is served by serve");
            await registerUser(s, pki.dir, "alice", PASSWORDS.alice);
          }
          const from = s.mark();
          const result = await runConnect({
            port: s.port,
            user: "alice",
            password: PASSWORDS.alice,
            pkiDir: pki.dir,
            transcripts: clientDir,
            args: c.serverName ? ["--server-name", c.serverName] : [],
          }, ["/who"]);
          if (c.code === null) {
            assert.equal(result.code, 0, result.stderr);
            return;
          }
          assert.equal(result.code, 1, result.stderr);
          assert.equal(errorCodeOf(result), c.code, result.stderr);
          if (c.reason) assert.match(result.stderr, c.reason);
          // The client tells the server why, sealed: the server logs the client's code.
          const logged = await loggedCode(s, from);
          assert.equal(logged.event, c.code, JSON.stringify(logged));
          assert.match(String(logged.detail), /peer ended the session/);
        });
      }
    } finally {
      for (const s of servers.values()) await s.dispose();
      await bob.finish();
    }
  },
});

shared.testShutdown();
