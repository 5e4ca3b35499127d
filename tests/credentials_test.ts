/**
 * Issue 17 (accounts) and 15 (tickets): a password change — the user's own (PROTOCOL §6.7),
 * the operator's `user passwd`, or a deletion — retires every resumption ticket issued before
 * it; a user's own change proves the old password inside the session, counts a wrong one as a
 * failed login, and is one at a time. Real server and client state machines over loopback TCP.
 */
import assert from "node:assert/strict";
import { codeOf } from "../lib/errors.ts";
import { clientHandshake, type Credentials } from "../lib/handshake/client.ts";
import type { EstablishedSession } from "../lib/handshake/common.ts";
import { memoryTicketStores, TicketAuthority } from "../lib/resumption/ticket.ts";
import { ChatSession, type SessionEnd } from "../lib/session/session.ts";
import { openUserStore } from "../lib/store/open.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { utf8 } from "../lib/bytes.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";
import { messageOf } from "./helpers/relay_wire.ts";

const PASSWORD = "alice-password-1";
const NEW_PASSWORD = "alice-password-2";

async function handshake(
  port: number,
  pki: TestPki,
  credentials: Credentials,
): Promise<EstablishedSession> {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  return await clientHandshake(new FrameConnection(tcp), {
    identity: await pki.identity(credentials.username),
    trust: pki.trust,
    serverName: "localhost",
    credentials,
    timeoutMs: 20_000,
  });
}

/** A login that asks for a ticket; the connection is dropped at once. */
async function ticketFor(port: number, pki: TestPki, password: string): Promise<Uint8Array> {
  const est = await handshake(port, pki, {
    mode: "login",
    username: "alice",
    password,
    wantTicket: true,
  });
  est.conn.close();
  assert.ok(est.ticket, "the server issued a ticket");
  return est.ticket;
}

/** "auth_ok" or the code a resumption with `ticket` is refused with. */
async function resume(port: number, pki: TestPki, ticket: Uint8Array): Promise<string> {
  try {
    const est = await handshake(port, pki, { mode: "resume", username: "alice", ticket });
    est.conn.close();
    return "auth_ok";
  } catch (error) {
    return codeOf(error);
  }
}

async function withServer(
  fn: (
    port: number,
    pki: TestPki,
    srv: Awaited<ReturnType<typeof startInProcessServer>>,
  ) => Promise<void>,
  loginThrottle = { baseDelayMs: 1, maxDelayMs: 4, lockoutFailures: 20, windowMs: 60_000 },
) {
  const pki = await makePki(["alice"]);
  const srv = await startInProcessServer(pki, { alice: PASSWORD }, {
    tickets: new TicketAuthority(memoryTicketStores()),
    loginThrottle,
  });
  try {
    await fn(srv.server.port, pki, srv);
  } finally {
    await srv.dispose();
    await Deno.remove(pki.dir, { recursive: true });
  }
}

Deno.test("tickets: a password reset by the operator or a deleted account refuses every ticket issued before", async () => {
  await withServer(async (port, pki, srv) => {
    const admin = srv.store as Awaited<ReturnType<typeof openUserStore>>;
    // Control: a ticket resumes once.
    assert.equal(await resume(port, pki, await ticketFor(port, pki, PASSWORD)), "auth_ok");
    // Before: alice's ticket stayed good for 10 minutes after her password was reset, so
    // whoever held it (and her certificate key) kept getting in.
    const stolen = await ticketFor(port, pki, PASSWORD);
    await admin.setPassword("alice", NEW_PASSWORD);
    assert.equal(await resume(port, pki, stolen), "AUTH_FAIL");
    // A ticket issued after the change is good.
    assert.equal(await resume(port, pki, await ticketFor(port, pki, NEW_PASSWORD)), "auth_ok");
    const orphan = await ticketFor(port, pki, NEW_PASSWORD);
    assert.equal(await admin.remove("alice"), true);
    assert.equal(await resume(port, pki, orphan), "AUTH_FAIL");
    await admin.register({ email: "alice@example.com", username: "alice", password: PASSWORD });
    assert.equal(await resume(port, pki, orphan), "AUTH_FAIL", "not for the new account either");
  });
});

/** A logged-in session of alice, run until the test closes it. */
async function session(port: number, pki: TestPki, dir: string, password = PASSWORD) {
  const est = await handshake(port, pki, {
    mode: "login",
    username: "alice",
    password,
    wantTicket: true,
  });
  const chat = await ChatSession.start(est, {
    transcripts: transcriptDirectory(dir),
    relayTrust: pki.trust,
  });
  const running: Promise<SessionEnd> = chat.run({ onMessage: () => {} });
  return { chat, ticket: est.ticket!, running };
}

Deno.test("/passwd: the user's own change needs the old password, retires the tickets, and the new one logs in", async () => {
  await withServer(async (port, pki, srv) => {
    const dir = await Deno.makeTempDir({ prefix: "securechat-passwd-" });
    try {
      const { chat, ticket, running } = await session(port, pki, dir);
      const refused = (old: string, next: string) =>
        chat.changePassword(old, next).then(() => "changed", codeOf);
      assert.equal(await refused("not-the-password", NEW_PASSWORD), "AUTH_FAIL");
      // The server applies the rules itself (a client that skipped them gets INVALID_INPUT).
      assert.equal(await refused(PASSWORD, "short"), "INVALID_INPUT");
      assert.equal(await refused(PASSWORD, PASSWORD), "INVALID_INPUT");
      await chat.changePassword(PASSWORD, NEW_PASSWORD);
      // The session goes on, and its own ticket (issued at this login) is now refused.
      assert.equal(chat.closing, false);
      assert.equal(await resume(port, pki, ticket), "AUTH_FAIL");
      await chat.close();
      const end = await running;
      assert.equal(end.outcome, "closed");
      // Nothing of either password is in the transcript (control records are not recorded).
      const transcript = await Deno.readTextFile(end.transcriptPath);
      for (const secret of [PASSWORD, NEW_PASSWORD]) {
        assert.ok(!transcript.includes(secret), "a password in the transcript");
      }
      await assert.rejects(
        handshake(port, pki, { mode: "login", username: "alice", password: PASSWORD }),
        (e) => codeOf(e) === "AUTH_FAIL",
      );
      (await handshake(port, pki, { mode: "login", username: "alice", password: NEW_PASSWORD }))
        .conn.close();
      const logged = srv.logs.filter((e) => e.event === "PASSWORD_CHANGED");
      assert.equal(logged.length, 1);
      assert.ok(!JSON.stringify(srv.logs).includes(NEW_PASSWORD), "a password in the log");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("/passwd: wrong old passwords count as failed logins and end in RATE_LIMITED", async () => {
  await withServer(async (port, pki) => {
    const dir = await Deno.makeTempDir({ prefix: "securechat-passwd-" });
    try {
      const { chat, running } = await session(port, pki, dir);
      const answers: string[] = [];
      for (const guess of ["guess-number-1", "guess-number-2", "guess-number-3", PASSWORD]) {
        answers.push(await chat.changePassword(guess, NEW_PASSWORD).then(() => "changed", codeOf));
      }
      // Three failures lock the certificate: even the right old password is refused, unchecked.
      assert.deepEqual(answers, ["AUTH_FAIL", "AUTH_FAIL", "AUTH_FAIL", "RATE_LIMITED"]);
      // The lockout is the login's: a new login with this certificate is refused too.
      await assert.rejects(
        handshake(port, pki, { mode: "login", username: "alice", password: PASSWORD }),
        (e) => codeOf(e) === "RATE_LIMITED",
      );
      await chat.close();
      await running;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }, { baseDelayMs: 1, maxDelayMs: 4, lockoutFailures: 3, windowMs: 60_000 });
});

Deno.test("/passwd: a second change before the first is answered ends the session with PROTOCOL_ERROR", async () => {
  await withServer(async (port, pki) => {
    const dir = await Deno.makeTempDir({ prefix: "securechat-passwd-" });
    try {
      const est = await handshake(port, pki, {
        mode: "login",
        username: "alice",
        password: PASSWORD,
      });
      // Two changes back to back, as a client that ignores the one-at-a-time rule sends them.
      for (const id of [1, 2]) {
        const change = { type: "password_change", id, old: PASSWORD, new: `${NEW_PASSWORD}-${id}` };
        est.conn.send(est.records.seal(utf8(JSON.stringify(change))));
      }
      const answers: string[] = [];
      for (;;) {
        const frame = await est.conn.read(20_000);
        if (frame === null) break;
        const messages = est.records.openContents(frame).map(messageOf);
        for (const m of messages) answers.push(m.type === "error" ? m.code : m.type);
        if (messages.some((m) => m.type === "error")) break;
      }
      assert.equal(answers.at(-1), "PROTOCOL_ERROR", `answers: ${answers.join(", ")}`);
      est.conn.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
