/**
 * held17 (review17 R17-4's cluster twin): a user who logs in on one node while the node of its
 * last session lags is replayed what it missed (DEPLOY.md §4.4), and what the cluster says to it
 * meanwhile is held back (`Member.held`, lib/server/lobby.ts) so each author's lines arrive in
 * order. The replay goes at the pace the user reads, so a user that stopped reading during it
 * made its node hold everything the cluster said, with no bound. Now what is held for a session,
 * during its replay and its offline delivery together, may keep 16 send queues (PROTOCOL §8.2),
 * then the session is dropped `SLOW_CONSUMER`. Real nats-server and MariaDB, as
 * tests/cluster_test.ts.
 */
import assert from "node:assert/strict";
import { LOBBY } from "../lib/message/record.ts";
import { makePki } from "../testkit/pki.ts";
import { HostileClient } from "../testkit/hostile.ts";
import { registerUser } from "../testkit/server_process.ts";
import { SENDER_ENVELOPE } from "./helpers/records.ts";
import { clusterUnavailable, startTestCluster } from "./helpers/cluster.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

const skipCluster = skipUnless("cluster", clusterUnavailable(), "the cluster held-bound test");
const password = (user: string) => `${user}-password-123`;
/** Every node's send queue (`--send-queue`): what is held may keep 16 of them (1 MiB). */
const SEND_QUEUE = 65_536;
const HELD_QUEUE_FACTOR = 16;
/** Lines bob misses while his node is frozen: more than loopback's socket buffers take (~18 MB). */
const MISSED = 900;
/** Lines said while bob's replay waits for him: ~8 MB, far past the bound. */
const LIVE = 300;
const PLAINTEXT = new Uint8Array(20_000).fill(0x61);

/** alice's lobby lines, end to end as a lobby's are (the server reads only their shape). */
const lobbyLine = {
  to: LOBBY,
  message: (m: Record<string, unknown>) => {
    for (const item of m.records as Record<string, unknown>[]) {
      delete item.k;
      item.e2e = structuredClone(SENDER_ENVELOPE);
    }
    return m;
  },
};

Deno.test({
  name:
    "cluster: a user that stops reading during its replay is dropped SLOW_CONSUMER once what its node holds for it keeps 16 send queues, not held everything the cluster says (held17)",
  ignore: skipCluster,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pki = await makePki(["alice", "bob"], "ed25519");
    const cluster = await startTestCluster({
      pkiDir: pki.dir,
      nodes: 2,
      args: ["--send-queue", String(SEND_QUEUE), "--message-rate", "100000"],
    });
    const clients: HostileClient[] = [];
    const client = async (user: string, port: number) => {
      const c = await HostileClient.connect(port, {
        identity: await pki.identity(user),
        trust: pki.trust,
        username: user,
        password: password(user),
      });
      clients.push(c);
      await c.handshake();
      return c;
    };
    try {
      const [n1, n2] = cluster.nodes;
      for (const user of ["alice", "bob"]) {
        await registerUser(n1, pki.dir, user, password(user), `${n1.workDir}/${user}-transcripts`);
      }
      await client("bob", n2.port);
      const alice = await client("alice", n1.port);
      // n1 hears n2's presence (bob there) every 500 ms; after a few beats n2 is frozen, so the
      // cursor it reported for bob stays where it was.
      await new Promise((resolve) => setTimeout(resolve, 5_000));
      n2.child.kill("SIGSTOP");
      for (let i = 0; i < MISSED; i++) await alice.sendMsg(PLAINTEXT, lobbyLine);
      // bob logs in on n1 and reads nothing more: his replay waits for him.
      const mark = n1.mark();
      await client("bob", n1.port);
      for (let i = 0; i < LIVE; i++) await alice.sendMsg(PLAINTEXT, lobbyLine);
      const dropped = await n1.waitFor(
        (e) =>
          e.event === "SLOW_CONSUMER" && e.user === "bob" &&
          /held back during its replay/.test(String(e.detail)),
        60_000,
        mark,
      ).catch(() => undefined);
      assert.ok(
        dropped,
        `n1 did not drop bob for what it held during his replay: ${
          JSON.stringify(n1.events((e) => e.user === "bob", mark).slice(-5))
        }`,
      );
      // Held at the drop: the bound and the record that passed it (at most one record, 64 KiB).
      const heldBytes = Number(/(\d+) bytes held/.exec(String(dropped.detail))![1]);
      assert.ok(heldBytes <= HELD_QUEUE_FACTOR * SEND_QUEUE + 65_536, `${heldBytes} bytes held`);
      n2.child.kill("SIGCONT");
    } finally {
      for (const c of clients) c.close();
      await cluster.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
