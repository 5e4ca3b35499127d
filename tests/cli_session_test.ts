/**
 * Issue 3 "must show", through the real CLI only: register, log in, chat both ways
 * (user ↔ user through the lobby, operator → users through `serve --console`), close
 * cleanly with receipts on both sides — while a proxy records every byte alice's
 * connection carried, which must contain neither her password nor any message text.
 * Then a wrong password and an unknown user: AUTH_FAIL, indistinguishable to the client.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { FrameProxy } from "./helpers/proxy.ts";
import { errorCodeOf, LiveClient, runConnect } from "../testkit/server_process.ts";
import { startSharedServer } from "./helpers/shared_server.ts";

const pki = await makePki(["alice", "bob", "carol"]);
const shared = await startSharedServer({ pkiDir: pki.dir, console: true });
const { server } = shared;

const PASSWORDS = { alice: "Alice-s3cret-passw0rd", bob: "bob-password-1" };
const dirs = { alice: `${server.workDir}/alice`, bob: `${server.workDir}/bob` };

/** Every form in which `text` could show up in the captured JSON frames. */
function forms(text: string): string[] {
  const jsonEscaped = JSON.stringify(text).slice(1, -1);
  const asciiEscaped = jsonEscaped.replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return [...new Set([text, jsonEscaped, asciiEscaped])];
}

function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** The file paths `connect` printed on stderr ("transcript: …", "receipt: …"). */
function printedPaths(stderr: string): { transcript?: string; receipt?: string; peer?: string } {
  return {
    transcript: /transcript: (\S+)/.exec(stderr)?.[1],
    receipt: /\breceipt: (\S+\.receipt\.json)/.exec(stderr)?.[1],
    peer: /server's receipt: (\S+)/.exec(stderr)?.[1],
  };
}

Deno.test({
  name:
    "CLI: register, login, chat both ways, clean close with receipts; nothing secret on the wire",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const proxy = FrameProxy.start(server.port);
    const secrets = {
      aliceLine: `alice says h\u00e9llo "quoted" \u2713 ${crypto.randomUUID()}`,
      bobLine: `bob answers ${crypto.randomUUID()}`,
      operatorLine: `operator notice ${crypto.randomUUID()}`,
      privateLine: `just for bob ${crypto.randomUUID()}`,
    };
    let alice: LiveClient | undefined;
    let bob: LiveClient | undefined;
    try {
      await t.step("register alice (through the proxy) and bob", async () => {
        const from = server.mark();
        const a = await runConnect({
          port: proxy.port,
          user: "alice",
          password: PASSWORDS.alice,
          pkiDir: pki.dir,
          transcripts: dirs.alice,
          registerEmail: "alice@example.com",
        });
        assert.equal(a.code, 0, a.stderr);
        assert.match(a.stderr, /registered and logged in as alice/);
        const b = await runConnect({
          port: server.port,
          user: "bob",
          password: PASSWORDS.bob,
          pkiDir: pki.dir,
          transcripts: dirs.bob,
          registerEmail: "bob@example.com",
        });
        assert.equal(b.code, 0, b.stderr);
        assert.equal(server.events((e) => e.event === "LOGIN", from).length, 2);
      });

      await t.step(
        "log in and chat: user → user, user → user privately, operator → all",
        async () => {
          bob = await LiveClient.login({
            port: server.port,
            user: "bob",
            password: PASSWORDS.bob,
            pkiDir: pki.dir,
            transcripts: dirs.bob,
          });
          alice = await LiveClient.login({
            port: proxy.port,
            user: "alice",
            password: PASSWORDS.alice,
            pkiDir: pki.dir,
            transcripts: dirs.alice,
          });
          await alice.send(secrets.aliceLine);
          await bob.waitForLine((l) => l.includes(`alice \u2713 ${secrets.aliceLine}`));
          await bob.send(secrets.bobLine);
          await alice.waitForLine((l) => l.includes(`bob \u2713 ${secrets.bobLine}`));
          await alice.send(`/msg bob ${secrets.privateLine}`);
          await bob.waitForLine((l) => l.includes(`alice (private) \u2713 ${secrets.privateLine}`));
          await server.say(secrets.operatorLine);
          await alice.waitForLine((l) => l.includes(`server \u2713 ${secrets.operatorLine}`));
          await bob.waitForLine((l) => l.includes(`server \u2713 ${secrets.operatorLine}`));
          // A lobby line is not echoed to its author.
          assert.equal(alice.lines((l) => l.includes(secrets.aliceLine)).length, 0);
        },
      );

      await t.step("clean close: exit 0, transcript and both receipts on both sides", async () => {
        const from = server.mark();
        for (const [name, client] of [["alice", alice!], ["bob", bob!]] as const) {
          const result = await client.end();
          assert.equal(result.code, 0, result.stderr);
          const paths = printedPaths(result.stderr);
          assert.ok(paths.transcript && await exists(paths.transcript), `${name}: transcript`);
          assert.ok(paths.receipt && await exists(paths.receipt), `${name}: own receipt`);
          assert.ok(paths.peer && await exists(paths.peer), `${name}: server's receipt`);
          const close = await server.waitFor(
            (e) => e.event === "CLOSE" && e.user === name,
            10_000,
            from,
          );
          assert.equal(close.outcome, "closed");
          const serverReceipt = String(close.receipt);
          assert.ok(await exists(serverReceipt), `server receipt for ${name}`);
          assert.ok(
            await exists(serverReceipt.replace(/\.receipt\.json$/, ".peer-receipt.json")),
            `server's copy of ${name}'s receipt`,
          );
        }
      });

      await t.step(
        "the captured bytes hold neither the password nor any message text",
        async () => {
          const captured = proxy.bytes();
          assert.ok(captured.length > 2000, `only ${captured.length} bytes captured`);
          // PROTOCOL §3.2: after hello / server_hello every frame is a padded sealed record.
          for (const dir of ["c2s", "s2c"] as const) {
            const frames = proxy.framesOf(dir);
            assert.ok(frames.length >= 8, `only ${frames.length} ${dir} frames`);
            for (const f of frames) {
              if (f.index === 0) {
                assert.equal(f.type, dir === "c2s" ? "hello" : "server_hello");
                continue;
              }
              assert.equal(f.type, undefined, `${dir} frame ${f.index} is plaintext JSON`);
              assert.equal((f.payload.length - 16) % 256, 0, `${dir} frame ${f.index} not padded`);
            }
          }
          // Nothing attributable: no certificate (alice's, bob's or the server's) in clear.
          for (const name of ["alice", "bob", "server"]) {
            const pem = await Deno.readTextFile(`${pki.dir}/${name}.pem`);
            const der = Uint8Array.from(
              atob(pem.replace(/-----[^-]+-----|\s/g, "")),
              (c) => c.charCodeAt(0),
            );
            assert.ok(
              !containsBytes(captured, der.subarray(0, 64)),
              `${name}'s certificate in clear`,
            );
          }
          const encoder = new TextEncoder();
          for (const [what, text] of Object.entries({ password: PASSWORDS.alice, ...secrets })) {
            for (const form of forms(text)) {
              assert.ok(
                !containsBytes(captured, encoder.encode(form)),
                `${what} in clear: ${form}`,
              );
            }
          }
          // Identity hiding: the certificates travel sealed, so not even the user name shows.
          assert.ok(!containsBytes(captured, encoder.encode("alice")), "user name in clear");
        },
      );
    } finally {
      await alice?.end().catch(() => {});
      await bob?.end().catch(() => {});
      await proxy.close();
    }
  },
});

Deno.test({
  name: "CLI: wrong password and unknown user both fail with AUTH_FAIL, alike to the client",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const bob = await shared.bystander("bob", PASSWORDS.bob);
    const from = server.mark();
    const wrong = await runConnect({
      port: server.port,
      user: "alice",
      password: "not-alices-password",
      pkiDir: pki.dir,
      transcripts: dirs.alice,
    }, ["should never be sent"]);
    // carol has a valid certificate but never registered.
    const unknown = await runConnect({
      port: server.port,
      user: "carol",
      password: "not-alices-password",
      pkiDir: pki.dir,
      transcripts: `${server.workDir}/carol`,
    }, ["should never be sent"]);
    for (const result of [wrong, unknown]) {
      assert.equal(result.code, 1, result.stderr);
      assert.equal(errorCodeOf(result), "AUTH_FAIL", result.stderr);
    }
    const errorLine = (stderr: string) => stderr.split("\n").find((l) => l.includes("error:"));
    assert.equal(errorLine(wrong.stderr), errorLine(unknown.stderr));
    assert.equal(wrong.stdout, unknown.stdout);
    const fails = await Promise.all(
      ["alice", "carol"].map((user) =>
        server.waitFor((e) => e.event === "AUTH_FAIL" && e.user === user, 10_000, from)
      ),
    );
    assert.equal(fails.length, 2);
    assert.equal(server.events((e) => e.event === "LOGIN", from).length, 0);
    // The log never carries a password.
    const log = JSON.stringify(server.logs);
    for (const password of [PASSWORDS.alice, PASSWORDS.bob, "not-alices-password"]) {
      assert.ok(!log.includes(password), "a password in the server log");
    }
    await bob.finish();
  },
});

shared.testShutdown();
