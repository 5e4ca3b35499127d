/**
 * Issue 13, one user on several devices (PROTOCOL §12.6): each device has its own identity
 * key and bundle in the key directory, a sender wraps a private line once per device it
 * knows, and a device the sender did not know yet says so ("this device has no key for this
 * message") instead of crashing or dropping the line, then becomes known by speaking.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FrameConnection } from "../lib/wire/connection.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import {
  LiveClient,
  logIs,
  pollUntil,
  registerUser,
  ServerProcess,
} from "../testkit/server_process.ts";

const PASSWORDS = { alice: "alice-password-1", bob: "bob-password-12" };

async function aliceDevice(pki: TestPki, server: ServerProcess, name: string, publish = true) {
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  return await deviceLogin(new FrameConnection(tcp), {
    pki,
    user: "alice",
    password: PASSWORDS.alice,
    transcriptDir: join(server.workDir, `alice-${name}`),
    publish,
  });
}

function relayed(device: DeviceClient, text: string) {
  return pollUntil(
    () =>
      device.received.flatMap((m) => m.type === "relay" ? [m.relayed] : []).find((r) =>
        r.text === text || (text === "" && r.undecryptable !== undefined)
      ),
    15_000,
    () => `a relay ${JSON.stringify(text)} at alice's device`,
  );
}

Deno.test("e2e devices: a line reaches every device the sender knows; an unknown device says it has no key, then gets known by speaking", async () => {
  const pki = await makePki(["alice", "bob"], "ed25519");
  const server = await ServerProcess.start({ pkiDir: pki.dir });
  const devices: DeviceClient[] = [];
  let bob: LiveClient | undefined;
  try {
    // Registering through the CLI publishes each user's CLI device already.
    for (const user of ["alice", "bob"] as const) {
      await registerUser(server, pki.dir, user, PASSWORDS[user]);
    }
    bob = await LiveClient.login({
      port: server.port,
      user: "bob",
      password: PASSWORDS.bob,
      pkiDir: pki.dir,
      transcripts: join(server.workDir, "bob-transcripts"),
    });

    // alice's second device (a page, say): bob's first line to her covers it.
    const second = await aliceDevice(pki, server, "second");
    devices.push(second);
    await bob.send("/msg alice to each of your devices");
    assert.equal((await relayed(second, "to each of your devices")).author, "bob");

    // A third device logs in (taking the session over) and has not published its keys yet,
    // so bob's next line has no wrap for it: a clear notice, no crash.
    const mark = server.mark();
    const third = await aliceDevice(pki, server, "third", false);
    devices.push(third);
    await server.waitFor(logIs("LOGIN", { user: "alice" }), 10_000, mark);
    await bob.send("/msg alice before I know your third device");
    const unreadable = await relayed(third, "");
    assert.match(unreadable.undecryptable!, /this device has no key for this message/);
    assert.equal(unreadable.author, "bob", "still a verified line from bob");
    assert.equal(unreadable.text, "", "nothing shown as its text");

    // The third device publishes and speaks first: bob's client learns it from that first
    // contact, and its next line is wrapped for the third device too.
    await third.e2e.publish(third.session);
    assert.ok((await third.say("/msg bob hello from my third device"))! >= 1);
    await bob.waitForLine((l) => l.includes("alice (private) ✓ hello from my third device"));
    await bob.send("/msg alice now I know it");
    assert.equal((await relayed(third, "now I know it")).author, "bob");

    // The session went on through all of it, and ends with a receipt.
    await third.session.close();
    assert.ok((await third.running).receiptPath);
    assert.equal((await bob.end()).code, 0);
  } finally {
    await bob?.end().catch(() => {});
    for (const d of devices) await d.session.close().catch(() => {});
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
