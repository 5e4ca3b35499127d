/**
 * Offline delivery in a cluster (issue 13, PROTOCOL §6.6, DEPLOY §3): the queue lives in the
 * MariaDB every node shares, so a private record stored on one node reaches its recipient
 * when they log in on another, once, and is gone from the database after their client
 * acknowledges it. Real nats-server and MariaDB, as tests/cluster_test.ts.
 */
import assert from "node:assert/strict";
import { makePki } from "../testkit/pki.ts";
import { LiveClient, liveLogins, pollUntil, registerUser } from "../testkit/server_process.ts";
import { clusterUnavailable, startTestCluster } from "./helpers/cluster.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

const skipCluster = skipUnless("cluster", clusterUnavailable(), "the offline cluster test");
const password = (user: string) => `${user}-password-123`;

Deno.test({
  name:
    "cluster: a record stored on node 1 reaches its recipient on node 2, once, then leaves MariaDB",
  ignore: skipCluster,
  async fn() {
    const pki = await makePki(["alice", "bob"], "ed25519");
    const cluster = await startTestCluster({ pkiDir: pki.dir, nodes: 2 });
    const clients: LiveClient[] = [];
    try {
      const [n1, n2] = cluster.nodes;
      // Each user registers from the state of its later logins: one device (PROTOCOL §12.6).
      for (const user of ["alice", "bob"]) {
        await registerUser(n1, pki.dir, user, password(user), `${n1.workDir}/${user}-transcripts`);
      }
      const login = liveLogins({ pkiDir: pki.dir, workDir: n1.workDir, password }, clients);
      const alice = await login("alice", n1.port);
      await alice.send("/msg bob stored on node 1");
      await pollUntil(
        () => alice.stderr.find((l) => l.includes("stored: the recipient is not online")),
        10_000,
        () => alice.stderr.join("\n"),
      );
      const database = new URL(cluster.db.url).pathname.slice(1);
      const rows = () => cluster.db.sql("SELECT COUNT(*) FROM message_queue", database);
      assert.match(await rows(), /^\s*1\s*$/m);

      const bob = await login("bob", n2.port);
      await bob.waitForLine((l) =>
        l.includes("alice (private, while you were away) ✓ stored on node 1")
      );
      await n2.waitFor((e) => e.event === "STORED_ACKED" && e.user === "bob");
      assert.match(await rows(), /^\s*0\s*$/m);
      // Once: the live path goes on as usual after it.
      await alice.send("/msg bob and now live");
      await bob.waitForLine((l) => l.includes("alice (private) ✓ and now live"));
      assert.equal(bob.lines((l) => l.includes("stored on node 1")).length, 1);
      for (const client of [alice, bob]) assert.equal((await client.end()).code, 0);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await cluster.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});
