/**
 * Issue 11 items 4 and 5: the login lockout is atomic (an attempt is reserved before the
 * password is hashed) and hits only who failed (per certificate and per account, never per
 * address). Each test reproduces an attack that succeeded against the v1 throttle.
 */
import assert from "node:assert/strict";
import type { Identity } from "../lib/handshake/common.ts";
import type { HostileClient } from "../testkit/hostile.ts";
import { answerTo, startInProcessServer } from "./helpers/in_process_server.ts";
import { makePki } from "../testkit/pki.ts";

const PASSWORD = "the-right-password";
/** Small delays keep the test quick; the lockout count is the documented default. */
const THROTTLE = { baseDelayMs: 1, maxDelayMs: 4, lockoutFailures: 20, windowMs: 60_000 };

/** One complete login attempt through the real handshake. */
async function tryLogin(
  start: (password: string, identity?: Identity) => Promise<HostileClient>,
  password: string,
  identity?: Identity,
): Promise<string> {
  const h = await start(password, identity);
  await h.upTo("credentials");
  await h.step("credentials");
  return await answerTo(h);
}

function tally(answers: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of answers) counts[a] = (counts[a] ?? 0) + 1;
  return counts;
}

Deno.test("lockout: 100 concurrent wrong guesses get exactly 20 password checks, then the right one is refused", async () => {
  const pki = await makePki(["alice"]);
  const srv = await startInProcessServer(pki, { alice: PASSWORD }, { loginThrottle: THROTTLE });
  let checks = 0;
  const login = srv.store.login.bind(srv.store);
  srv.store.login = (username, password) => (checks++, login(username, password));
  try {
    // Every guess is ready to send before the first is sent, so they all race the check.
    const clients = await Promise.all(
      Array.from(
        { length: 100 },
        (_, i) => srv.client({ username: "alice", password: `guess-${i}` }),
      ),
    );
    await Promise.all(clients.map((h) => h.upTo("credentials")));
    const answers = await Promise.all(clients.map(async (h) => {
      await h.step("credentials");
      return await answerTo(h);
    }));
    // v1 checked the lockout before hashing and counted after: most of the 100 were checked.
    assert.deepEqual(tally(answers), { AUTH_FAIL: 20, RATE_LIMITED: 80 });
    assert.equal(checks, 20, "password checks made");
    const right = await tryLogin(
      (password) => srv.client({ username: "alice", password }),
      PASSWORD,
    );
    assert.equal(right, "RATE_LIMITED", "this certificate is locked out, right password or not");
    assert.equal(checks, 20);
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("lockout: one user's failures at a shared address do not lock out another user there", async () => {
  const pki = await makePki(["mallory", "bob"]);
  const srv = await startInProcessServer(
    pki,
    { mallory: PASSWORD, bob: PASSWORD },
    { loginThrottle: THROTTLE },
  );
  try {
    const as = (username: string) => (password: string) => srv.client({ username, password });
    // Everyone here speaks from 127.0.0.1, like users behind one NAT.
    const mallory: string[] = [];
    for (let i = 0; i < 21; i++) mallory.push(await tryLogin(as("mallory"), `wrong-${i}`));
    assert.deepEqual(tally(mallory), { AUTH_FAIL: 20, RATE_LIMITED: 1 });
    // v1 counted the failures on the address too: bob got RATE_LIMITED here.
    assert.equal(await tryLogin(as("bob"), PASSWORD), "auth_ok");
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("lockout: a thief locks their certificate and the account, but the owner's other certificate still logs in", async () => {
  const pki = await makePki(["alice"]);
  const stolen = await pki.identity("alice");
  await pki.issue("alice"); // alice's new certificate (same name, new key and serial)
  const owners = await pki.identity("alice");
  await pki.issue("alice"); // a third one, never used until the end
  const third = await pki.identity("alice");
  const srv = await startInProcessServer(pki, { alice: PASSWORD }, { loginThrottle: THROTTLE });
  try {
    const alice = (password: string, identity?: Identity) =>
      srv.client({ username: "alice", password, identity });
    const thief: string[] = [];
    for (let i = 0; i < 22; i++) thief.push(await tryLogin(alice, `guess-${i}`, stolen));
    assert.deepEqual(tally(thief), { AUTH_FAIL: 20, RATE_LIMITED: 2 });
    assert.equal(await tryLogin(alice, PASSWORD, stolen), "RATE_LIMITED");
    // v1 locked the user name: the owner was refused with the right password.
    assert.equal(await tryLogin(alice, PASSWORD, owners), "auth_ok");
    // The account stays locked for any certificate that fails: one guess each, no more.
    assert.equal(await tryLogin(alice, "wrong-from-a-third-certificate", third), "AUTH_FAIL");
    assert.equal(await tryLogin(alice, PASSWORD, third), "RATE_LIMITED");
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});

Deno.test("lockout: an address's handshake budget is spent only by handshakes that never proved a certificate", async () => {
  const pki = await makePki(["alice", "bob", "carol"]);
  const srv = await startInProcessServer(
    pki,
    { alice: PASSWORD, bob: PASSWORD, carol: PASSWORD },
    // Three handshakes at once from an address, then one per 100 s: a NAT's budget, shrunk.
    { admission: { handshakeBurst: 3, handshakesPerSecond: 0.01, cookieThreshold: 10_000 } },
  );
  try {
    const as = (username: string) => (password: string) => srv.client({ username, password });
    // Six logins from one address, more than its budget: v1 refused the fourth.
    const logins: string[] = [];
    for (const user of ["alice", "bob", "carol", "alice", "bob", "carol"]) {
      logins.push(await tryLogin(as(user), PASSWORD));
    }
    assert.deepEqual(logins, Array(6).fill("auth_ok"));
    // Handshakes abandoned before any certificate do spend it.
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) {
      const h = await srv.client({ username: "alice", password: PASSWORD });
      await h.sendHello();
      const first = JSON.parse(new TextDecoder().decode((await h.conn.readFrame(10_000))!));
      answers.push(first.type === "error" ? first.code : first.type);
      h.close();
    }
    assert.deepEqual(answers, ["server_hello", "server_hello", "server_hello", "RATE_LIMITED"]);
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
});
