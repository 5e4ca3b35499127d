/**
 * review9 R9-2: while the server hands a member its offline queue at login (PROTOCOL §6.6,
 * paced to the send queue since R8-9), live relays to that member are held back so an author's
 * queued records arrive first. They must then reach the member at the pace the member reads, as
 * the stored ones did: a member reading all along, on a link that carries the lobby's traffic,
 * must not be dropped as a slow consumer because the lobby spoke while its queue was delivered.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, registerUser, ServerProcess, userOn } from "../testkit/server_process.ts";

const AUTHORS = ["alice", "dave", "erin", "frank"];
const USERS = [...AUTHORS, "bob", "carol"];
const password = (user: string) => `${user}-password-1234`;
/**
 * bob's offline queue: the default --queue-max of long lines, ~5.5 MB, more than the kernel's
 * socket buffers on loopback take at once (~4 MB here), so the delivery has to wait for bob.
 */
const STORED = 1000;
/** Each line near the 4000-character limit of a `text` body (§6.2): ~5.5 KB on the wire. */
const line = (tag: string, n: number) => `${tag}${String(n).padStart(4, "0")} ${"x".repeat(3900)}`;
/** bob's link from the server: 1.6 Mbit/s, about twice what the lobby sends him below. */
const LINK_BYTES_PER_SECOND = 200_000;
/** carol speaks up to 20 long lines a second (the server's default rate). */
const LIVE = 160;
const LIVE_INTERVAL_MS = 50;
/** A send queue of 256 KiB (`--send-queue`), a quarter of the default, to keep the test short. */
const SEND_QUEUE = 262_144;

/**
 * A loopback TCP proxy whose server-to-client direction carries at most `bytesPerSecond`:
 * a user on a modest link. The other direction passes as it comes.
 */
function throttledProxy(port: number, bytesPerSecond: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const pumps: Promise<void>[] = [];
  const slice = Math.max(1024, Math.floor(bytesPerSecond / 50));
  const accept = (async () => {
    for await (const client of listener) {
      const upstream = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(client, upstream);
      pumps.push(
        client.readable.pipeTo(upstream.writable).catch(() => {}),
        (async () => {
          const buffer = new Uint8Array(slice);
          try {
            for (;;) {
              const started = performance.now();
              const n = await upstream.read(buffer);
              if (n === null) break;
              let at = 0;
              while (at < n) at += await client.write(buffer.subarray(at, n));
              const due = (n / bytesPerSecond) * 1000 - (performance.now() - started);
              if (due > 0) await new Promise((resolve) => setTimeout(resolve, due));
            }
          } catch {
            // either side closed
          }
          for (const conn of [client, upstream]) {
            try {
              conn.close();
            } catch {
              // closed already
            }
          }
        })(),
      );
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // closed already
        }
      }
      await Promise.allSettled([accept, ...pumps]);
    },
  };
}

Deno.test("offline: live relays held back during a member's offline delivery reach it at its pace afterwards, not all in one turn (review9 R9-2)", async () => {
  const pki = await makePki(USERS, "ed25519");
  // The rate is raised only so that the authors fill bob's queue quickly; carol keeps to 20/s.
  const server = await ServerProcess.start({
    pkiDir: pki.dir,
    args: ["--message-rate", "1000", "--send-queue", String(SEND_QUEUE)],
  });
  const proxy = throttledProxy(server.port, LINK_BYTES_PER_SECOND);
  const clients: LiveClient[] = [];
  try {
    // Side by side: six registrations one after another took ~15 s of the test.
    await Promise.all(USERS.map((user) =>
      registerUser(
        server,
        pki.dir,
        user,
        password(user),
        userOn(server, pki.dir, user, password(user)).transcripts,
      )
    ));
    // Four authors fill bob's queue side by side (one alone takes minutes on a busy machine).
    const share = STORED / AUTHORS.length;
    const authors = await Promise.all(
      AUTHORS.map((user) =>
        LiveClient.login(userOn(server, pki.dir, user, password(user)), 60_000)
      ),
    );
    clients.push(...authors);
    await Promise.all(authors.map(async (author, a) => {
      for (let n = 1; n <= share; n++) await author.send(`/msg bob ${line("s", a * share + n)}`);
      await author.waitForStored(share, 240_000);
    }));
    const carol = await LiveClient.login(userOn(server, pki.dir, "carol", password("carol")));
    clients.push(carol);

    const mark = server.mark();
    const bob = LiveClient.start({
      ...userOn(server, pki.dir, "bob", password("bob")),
      port: proxy.port,
    });
    clients.push(bob);
    await server.waitFor((e) => e.event === "LOGIN" && e.user === "bob", 30_000, mark);
    // The lobby speaks while bob's queue is on its way to him.
    for (let n = 1; n <= LIVE; n++) {
      await carol.send(line("c", n));
      await new Promise((resolve) => setTimeout(resolve, LIVE_INTERVAL_MS));
    }
    const outcome = await Promise.race([
      bob.waitForLine((l) => l.includes(line("c", LIVE).slice(0, 40)), 120_000)
        .then(() => "delivered"),
      server.waitFor(
        (e) =>
          e.user === "bob" && e.event !== "LOGIN" && /SLOW_CONSUMER|PROTOCOL_ERROR/.test(e.event),
        120_000,
        mark,
      ).then((e) => `bob's session: ${JSON.stringify(e)}`),
    ]);
    assert.equal(outcome, "delivered");
    const shown = (tag: string) => bob.lines((l) => new RegExp(` ${tag}\\d{4} x`).test(l)).length;
    assert.equal(shown("s"), STORED, "every stored line once");
    assert.equal(shown("c"), LIVE, "every live line once");
  } finally {
    // Side by side: each client's close exchanges receipts, ~30 s for six one after another.
    await Promise.all(clients.map((client) => client.end().catch(() => {})));
    await proxy.close();
    await server.dispose();
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
});
