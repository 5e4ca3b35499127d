/**
 * Issue 15: a revocation holds on every node of a running cluster (docs/DEPLOY.md §4.6). On
 * real nats-server and MariaDB, three `serve` nodes each follow their own CRL file; the
 * operator drops the new CRL on node 1 only. Node 1 shares it through NATS, the others check
 * its CA signature and number and adopt it: bob's session on node 2 ends with REVOKED, his
 * login is refused on every node, also on a node started after the revocation. A forged or an
 * older CRL put on NATS is refused by every node (logged with its code) and replaced.
 */
import assert from "node:assert/strict";
import { connect as natsConnect, type KV } from "nats";
import { makePki } from "../testkit/pki.ts";
import {
  errorCodeOf,
  LiveClient,
  logIs,
  registerUser,
  runConnect,
  type ServerProcess,
} from "../testkit/server_process.ts";
import { runCli } from "../testkit/cli.ts";
import { clusterUnavailable, startTestCluster } from "./helpers/cluster.ts";
import { skipUnless } from "./helpers/optional_suites.ts";
import { fromBase64, timingSafeEqual, toBase64 } from "../lib/bytes.ts";
import {
  CLUSTER_VERSION,
  CRL_BUCKET,
  CRL_KEY,
  encodeClusterMessage,
  parseClusterMessage,
  SharedCrlSchema,
} from "../lib/cluster/messages.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { createCrl } from "../lib/ca/crl_sign.ts";
import { readInventory } from "../lib/ca/inventory.ts";
import { signingAlgorithmOf } from "../lib/pki/keys.ts";
import { pemDecode } from "../lib/pki/pem.ts";

const skipCluster = skipUnless("cluster", clusterUnavailable(), "the cluster tests");
const password = (user: string) => `${user}-password-123`;

async function crlDer(pkiDir: string): Promise<Uint8Array> {
  return pemDecode(await Deno.readTextFile(`${pkiDir}/ca.crl`), "X509 CRL", "BAD_CERT");
}

/** Waits until the bucket holds exactly `der` (a node put it back after a refusal). */
async function waitForShared(kv: KV, der: Uint8Array, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (true) {
    const entry = await kv.get(CRL_KEY);
    if (entry?.operation === "PUT") {
      const shared = fromBase64(parseClusterMessage(entry.value, SharedCrlSchema).crl);
      if (shared.length === der.length && timingSafeEqual(shared, der)) return;
    }
    if (Date.now() > deadline) throw new Error(`the shared CRL is not ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test({
  name:
    "cluster: a CRL dropped on node 1 ends bob's session on node 2 (REVOKED) and refuses him on every node, a later one too; a forged or older CRL on NATS is refused",
  ignore: skipCluster,
  async fn() {
    const pki = await makePki(["alice", "bob", "carol"], "ed25519");
    const stranger = await makePki([], "ed25519");
    // CRL 1 (nobody revoked) is every node's at start; node 1 follows the file beside the CA.
    const first = await runCli(["cert", "crl", "--dir", pki.dir]);
    assert.equal(first.code, 0, first.stderr);
    const crl1 = await crlDer(pki.dir);
    const cluster = await startTestCluster({ pkiDir: pki.dir, nodes: 3, crlPerNode: true });
    const nc = await natsConnect({ servers: cluster.nats.url });
    const clients: LiveClient[] = [];
    const user = (name: string, node: ServerProcess) => ({
      port: node.port,
      user: name,
      password: password(name),
      pkiDir: pki.dir,
      transcripts: `${cluster.nodes[0].workDir}/${name}-transcripts`,
    });
    try {
      const [n1, n2] = cluster.nodes;
      for (const name of ["alice", "bob", "carol"]) {
        await registerUser(n1, pki.dir, name, password(name));
      }
      const alice = await LiveClient.login(user("alice", n1));
      clients.push(alice);
      const bob = await LiveClient.login(user("bob", n2));
      clients.push(bob);

      // Node 3 is down while bob is revoked.
      await cluster.nodes[2].stop();
      let marks = cluster.nodes.map((n) => n.mark());
      const revoke = await runCli(["cert", "revoke", "bob", "--dir", pki.dir]);
      assert.equal(revoke.code, 0, revoke.stderr);
      await n1.waitFor(logIs("CRL_LOADED", { source: "file", number: "2" }), 20_000, marks[0]);
      const adopted = await n2.waitFor(
        logIs("CRL_LOADED", { source: "cluster", number: "2" }),
        20_000,
        marks[1],
      );
      assert.equal(adopted.newly_revoked, 1);
      await n2.waitFor(logIs("REVOKED", { user: "bob" }), 10_000, marks[1]);
      const ended = await bob.end();
      assert.notEqual(ended.code, 0);
      assert.match(ended.stderr, /REVOKED/);
      const crl2 = await crlDer(pki.dir);

      // Node 3 starts from its own file's CRL 1 and takes the shared CRL 2 before any login.
      const n3 = await cluster.restartNode(2);
      await n3.waitFor(logIs("CRL_LOADED", { source: "cluster", number: "2" }), 5000);
      for (const node of cluster.nodes) {
        const again = await runConnect(user("bob", node));
        assert.equal(errorCodeOf(again), "BAD_CERT", `bob on ${node.port}: ${again.stderr}`);
      }
      const carol = await runConnect(user("carol", n3));
      assert.equal(carol.code, 0, carol.stderr);

      // Anyone who can write NATS puts another CA's CRL revoking alice, under a high number.
      const kv = await nc.jetstream().views.kv(CRL_BUCKET);
      const put = (der: Uint8Array) =>
        kv.put(
          CRL_KEY,
          encodeClusterMessage({ v: CLUSTER_VERSION, node: "n1", crl: toBase64(der) }),
        );
      const other = await loadCaSigner(stranger.dir);
      const now = new Date(Math.floor(Date.now() / 1000) * 1000);
      const aliceSerial = (await readInventory(pki.dir)).certificates
        .find((e) => e.name === "alice")!.serial;
      const forged = await createCrl({
        caCert: other.cert,
        caKey: other.key,
        signingAlgorithm: signingAlgorithmOf(other.key),
        crlNumber: 99,
        entries: [{ serial: aliceSerial, revokedAt: now }],
        thisUpdate: now,
        nextUpdate: new Date(now.getTime() + 24 * 60 * 60 * 1000),
      });
      for (
        const [what, der, code] of [["forged", forged, "BAD_CERT"], [
          "older",
          crl1,
          "STALE",
        ]] as const
      ) {
        marks = cluster.nodes.map((n) => n.mark());
        await put(der);
        // The bucket keeps one revision: the first node to refuse puts CRL 2 back, and a node
        // whose watcher had not read the bad value yet never sees it. So: refused where seen,
        // adopted nowhere, and CRL 2 shared again.
        const refusedBySome = () =>
          cluster.nodes.some((n, i) =>
            n.events(logIs("CRL_REFUSED", { code }), marks[i]).length > 0
          );
        for (const deadline = Date.now() + 20_000; !refusedBySome();) {
          if (Date.now() > deadline) throw new Error(`no node refused the ${what} CRL`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await waitForShared(kv, crl2, `CRL 2 again after the ${what} one`);
        for (const [i, node] of cluster.nodes.entries()) {
          assert.deepEqual(node.events(logIs("CRL_LOADED", {}), marks[i]), [], `the ${what} CRL`);
        }
      }
      // alice's session went on through all of it.
      const from = alice.stdout.length;
      await alice.send("/who");
      await alice.waitForLine((l) => l.includes("* online: alice"), 10_000, from);
      const result = await alice.end();
      assert.equal(result.code, 0, result.stderr);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await nc.close();
      await cluster.dispose();
      await Deno.remove(pki.dir, { recursive: true });
      await Deno.remove(stranger.dir, { recursive: true });
    }
  },
});
