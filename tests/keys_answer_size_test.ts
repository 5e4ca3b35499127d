/**
 * A `keys` answer larger than one record (PROTOCOL §12.6): a user may have 8 devices, each
 * listed with the certificate it published under (up to 16 KiB) and its bundle, so the list
 * of one user's devices can be several times what one record holds (§3.2).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { verifyTranscript } from "../lib/transcript/verify.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { MAX_DEVICES } from "../lib/e2e/envelope.ts";
import { type DeviceClient, deviceLogin } from "../testkit/e2e_device.ts";
import { makePki } from "../testkit/pki.ts";
import { issuePaddedClient } from "./helpers/cert_fixtures.ts";
import { startInProcessServer } from "./helpers/in_process_server.ts";

const ACCOUNTS = { alice: "alice-password-1", bob: "bob-password-12" };

Deno.test("keys: a user's 8 devices under 16 KiB certificates all reach a contact that fetches them", async () => {
  await fetchEightLargeDevices();
});

// review17 R17-1: the answer's 8 parts (~300 KB) were queued in one turn, past a send queue of
// two records (`serve --send-queue 131072`): bob, reading all along, was dropped SLOW_CONSUMER
// and his fetch timed out. The parts now go as his queue drains.
Deno.test("keys: the 8 parts of a fetch's answer reach a contact whose send queue holds two records (128 KiB)", async () => {
  await fetchEightLargeDevices(128 * 1024);
});

/** alice's 8 devices under 16 KiB certificates, fetched by bob (`sendQueueBytes`: the server's). */
async function fetchEightLargeDevices(sendQueueBytes?: number): Promise<void> {
  const pki = await makePki(["alice", "bob"]);
  await issuePaddedClient(pki, "alice", 16 * 1024);
  const srv = await startInProcessServer(pki, ACCOUNTS, { sendQueueBytes });
  const work = await Deno.makeTempDir({ prefix: "securechat-keys-size-" });
  const login = async (user: "alice" | "bob", name: string): Promise<DeviceClient> =>
    await deviceLogin(
      new FrameConnection(await Deno.connect({ hostname: "127.0.0.1", port: srv.server.port })),
      { pki, user, password: ACCOUNTS[user], transcriptDir: join(work, `${user}-${name}`) },
    );
  const alices = new Set<string>();
  let bob: DeviceClient | undefined;
  try {
    // Each of alice's devices logs in, publishes its bundle under the large certificate, and
    // leaves (one session per user: the next login would take it over anyway).
    for (let i = 0; i < MAX_DEVICES; i++) {
      const device = await login("alice", `device${i}`);
      alices.add(device.e2e.device);
      await device.session.close();
      await device.running;
    }
    bob = await login("bob", "laptop");
    const { devices } = await bob.e2e.prepare("alice", bob.session);
    assert.equal(devices, MAX_DEVICES, "every device of alice's is wrapped for");
    assert.deepEqual(new Set(bob.e2e.devicesOf("alice")), alices);
    // The session went on, and a line to alice leaves wrapped for all of them.
    assert.equal(await bob.say("/msg alice eight devices"), MAX_DEVICES);
    await bob.session.close();
    const end = await bob.running;
    assert.ok(end.receiptPath, "bob's session ended with a receipt");
    // The answer's parts are lines of bob's transcript like any server msg, and it verifies.
    const report = await verifyTranscript(end.transcriptPath!, { trust: pki.trust });
    assert.equal(report.ok, true, report.reason ?? "");
  } catch (error) {
    const logged = srv.logs.filter((l) => l.event !== "INFO").map((l) =>
      `${l.event} ${l.detail ?? ""}`
    );
    throw new Error(`${(error as Error).message}; server log: ${logged.slice(-6).join(" | ")}`);
  } finally {
    await bob?.session.close().catch(() => {});
    await srv.dispose();
    await Deno.remove(work, { recursive: true });
    await Deno.remove(pki.dir, { recursive: true });
  }
}
