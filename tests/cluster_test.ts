/**
 * Issue 15: several `serve` nodes as one chat, on a real MariaDB, nats-server (JetStream) and
 * haproxy started from the Debian packages. Users on different nodes share the lobby, private
 * messages and /who; a second login on another node ends the first; a lockout holds on all.
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { LiveClient, registerUser } from "./helpers/server_process.ts";
import { runCli } from "./helpers/cli.ts";
import { clusterUnavailable, startTestCluster } from "./helpers/cluster.ts";
import { warnSkipped } from "./helpers/local_service.ts";

const unavailable = clusterUnavailable();
if (unavailable) warnSkipped("the cluster tests", unavailable);

const USERS = ["alice", "bob", "carol"] as const;
const password = (user: string) => `${user}-password-123`;

Deno.test({
  name: "cluster: lobby, private and /who across two nodes; a login on another node takes over",
  ignore: unavailable !== undefined,
  async fn() {
    const pki = await makePki([...USERS], "ed25519");
    const cluster = await startTestCluster({ pkiDir: pki.dir, nodes: 2 });
    const clients: LiveClient[] = [];
    try {
      const [n1, n2] = cluster.nodes;
      for (const user of USERS) await registerUser(n1, pki.dir, user, password(user));
      const login = async (user: string, port: number) => {
        const client = await LiveClient.login({
          port,
          user,
          password: password(user),
          pkiDir: pki.dir,
          transcripts: `${n1.workDir}/${user}-transcripts`,
        });
        clients.push(client);
        return client;
      };
      const alice = await login("alice", n1.port);
      const bob = await login("bob", n2.port);
      await alice.send("hello from node 1");
      await bob.waitForLine((l) => l.includes("alice ✓ hello from node 1"));
      await bob.send("/msg alice private from node 2");
      await alice.waitForLine((l) => l.includes("bob (private) ✓ private from node 2"));
      const mark = alice.stdout.length;
      await alice.send("/who");
      assert.match(
        await alice.waitForLine((l) => l.includes("* online:"), 10_000, mark),
        /online: alice, bob$/,
      );

      // carol logs in on node 1, then again on node 2: the first session ends cleanly.
      const carol1 = await login("carol", n1.port);
      const carol2 = await login("carol", n2.port);
      await carol1.waitForLine((l) => l.includes("you logged in elsewhere"));
      const first = await carol1.end();
      assert.equal(first.code, 0, first.stderr);
      await alice.send("after the takeover");
      await carol2.waitForLine((l) => l.includes("alice ✓ after the takeover"));

      for (const client of [alice, bob, carol2]) {
        const result = await client.end();
        assert.equal(result.code, 0, result.stderr);
      }
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await cluster.dispose();
      await Deno.remove(pki.dir, { recursive: true });
    }
  },
});

Deno.test("serve --cluster refuses SQLite, a missing --node and a URL that is not nats://", async () => {
  const pki = await makePki([], "ed25519");
  try {
    const serve = (args: string[]) =>
      runCli([
        "serve",
        "--port",
        "0",
        "--ca",
        `${pki.dir}/ca.pem`,
        "--cert",
        `${pki.dir}/server.pem`,
        "--key",
        `${pki.dir}/server.key`,
        ...args,
      ], { cwd: pki.dir });
    const sqlite = await serve(["--cluster", "nats://127.0.0.1:4222", "--node", "n1"]);
    assert.equal(sqlite.code, 2, sqlite.stderr);
    assert.match(sqlite.stderr, /--cluster needs a database every node shares: SQLite/);
    const mysql = ["--db", "mysql://u:p@127.0.0.1:3306/db"];
    const noNode = await serve(["--cluster", "nats://127.0.0.1:4222", ...mysql]);
    assert.equal(noNode.code, 2, noNode.stderr);
    assert.match(noNode.stderr, /--cluster needs --node NAME/);
    const badUrl = await serve(["--cluster", "http://secret@x", "--node", "n1", ...mysql]);
    assert.equal(badUrl.code, 2, badUrl.stderr);
    assert.match(badUrl.stderr, /--cluster takes NATS URLs/);
    assert.doesNotMatch(badUrl.stderr, /secret/);
  } finally {
    await Deno.remove(pki.dir, { recursive: true });
  }
});
