/**
 * Finding 55 (PROTOCOL §6.5, DEPLOY.md §4.1): what a node knows about a record it published
 * to the cluster's stream, against a real nats-server. A publish whose acknowledgement came too
 * late may still have landed: the node must learn that, not refuse a record the other nodes
 * deliver; it says `not_stored` only when no node can ever deliver it, and `unknown` when it
 * cannot learn.
 */
import assert from "node:assert/strict";
import { connect as natsConnect } from "nats";
import { ClusterLink, type PublishOutcome } from "../lib/cluster/link.ts";
import {
  parseClusterMessage,
  PresenceSchema,
  RECORD_STREAM,
  SUBJECTS,
} from "../lib/cluster/messages.ts";
import { pollUntil } from "../testkit/server_process.ts";
import { type NatsServer, natsServerBinary, startNats } from "../testkit/nats.ts";
import { skipUnless } from "./helpers/optional_suites.ts";

const nats = natsServerBinary();
const skipNats = skipUnless(
  "cluster",
  "reason" in nats ? nats.reason : undefined,
  "the cluster publish tests",
);

/** What the link logged: its event word and `outcome` field, and the detail. */
type Logged = { event: string; outcome?: unknown; detail?: string }[];

async function withLink(
  fn: (nats: NatsServer, link: ClusterLink, logged: Logged) => Promise<void>,
  outcomeWaitMs?: number,
): Promise<void> {
  const nats = await startNats();
  const logged: Logged = [];
  try {
    const link = await ClusterLink.connect({
      servers: [nats.url],
      node: "n1",
      log: (event, fields) =>
        logged.push({ event, outcome: fields?.outcome, detail: fields?.detail }),
      outcomeWaitMs,
    });
    try {
      await fn(nats, link, logged);
    } finally {
      nats.resume();
      await link.close();
    }
  } finally {
    nats.resume();
    await nats.dispose();
  }
}

/** How many records the stream holds, asked on a connection of its own. */
async function streamCount(nats: NatsServer): Promise<number> {
  const nc = await natsConnect({ servers: nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    return (await jsm.streams.info(RECORD_STREAM)).state.messages;
  } finally {
    await nc.close();
  }
}

const envelope = (text: string) => ({ from: "alice", record: { body: { kind: "notice", text } } });

Deno.test({
  name:
    "ClusterLink.publishRecord() says stored for a record JetStream took after the publish timed out, stores it once, and logs CLUSTER_SLOW when it asks and when it knows",
  ignore: skipNats,
  async fn() {
    await withLink(async (nats, link, logged) => {
      assert.equal((await link.publishRecord(envelope("before"), "s1:1")).outcome, "stored");
      assert.equal(logged.length, 0, "an acknowledged publish logs nothing");
      // NATS stops reading until the publish has waited its 2 s and the node asks: the record
      // sits in the socket, unanswered, and is stored when NATS reads on. The old code refused
      // it here (CLUSTER_UNAVAILABLE) while every node delivered it.
      await nats.pause();
      const publishing = link.publishRecord(envelope("slow"), "s1:2");
      await pollUntil(() => logged.length > 0 || undefined, 10_000, () => "no CLUSTER_SLOW");
      nats.resume();
      const outcome: PublishOutcome = await publishing;
      assert.equal(outcome.outcome, "stored", JSON.stringify(outcome));
      assert.equal(await streamCount(nats), 2, "the question stores nothing of its own");
      assert.deepEqual(logged.map((l) => [l.event, l.outcome]), [
        ["CLUSTER_SLOW", "asking"],
        ["CLUSTER_SLOW", "stored"],
      ]);
      assert.match(logged[0].detail!, /^record n1:s1:2: no acknowledgement in 2000 ms/);
      assert.match(logged[1].detail!, /^record n1:s1:2: stored \(stream seq 2\)/);
    });
  },
});

Deno.test({
  name:
    "ClusterLink.publishRecord() says not_stored when NATS is down and unknown when NATS never answers",
  ignore: skipNats,
  async fn() {
    await withLink(async (nats, link, logged) => {
      // Stopped for longer than the node asks (1.5 s here): nobody can say whether it landed.
      await nats.pause();
      const unknown = await link.publishRecord(envelope("unanswered"), "s1:1");
      assert.equal(unknown.outcome, "unknown", JSON.stringify(unknown));
      // Only the asking is the link's to log: the caller logs what it does with `unknown`.
      assert.deepEqual(logged.map((l) => [l.event, l.outcome]), [["CLUSTER_SLOW", "asking"]]);
      nats.resume();
      await nats.kill();
      // Disconnected: nothing is published, so nothing can land later.
      const deadline = Date.now() + 10_000;
      let down: PublishOutcome;
      do {
        down = await link.publishRecord(envelope("while down"), `s1:${Date.now()}`);
      } while (down.outcome !== "not_stored" && Date.now() < deadline);
      assert.equal(down.outcome, "not_stored", JSON.stringify(down));
    }, 1500);
  },
});

Deno.test({
  name:
    "nats-server answers the node's question (same message id, an expected last sequence no stream reaches) with duplicate when the id is stored and wrong last sequence when not, and stores neither",
  ignore: skipNats,
  async fn() {
    await withLink(async (nats, link) => {
      assert.equal((await link.publishRecord(envelope("stored"), "s1:1")).outcome, "stored");
      // The question ClusterLink asks after a publish without an answer (DEPLOY.md §4.1).
      const nc = await natsConnect({ servers: nats.url });
      try {
        const js = nc.jetstream();
        const ask = (id: string) =>
          js.publish("securechat.record.lobby", new TextEncoder().encode("?"), {
            msgID: `n1:${id}`,
            expect: { lastSequence: Number.MAX_SAFE_INTEGER },
          });
        const stored = await ask("s1:1");
        assert.deepEqual([stored.duplicate, stored.seq], [true, 1]);
        await assert.rejects(ask("s1:2"), (e: { api_error?: { err_code?: number } }) => {
          assert.equal(e.api_error?.err_code, 10071, JSON.stringify(e.api_error));
          return true;
        });
      } finally {
        await nc.close();
      }
      assert.equal(await streamCount(nats), 1);
    });
  },
});

Deno.test({
  name:
    "ClusterLink: the cursor a heartbeat reports never passes what a session holds back (heldFrom), and moves on once nothing is held",
  ignore: skipNats,
  async fn() {
    await withLink(async (nats, link) => {
      let held: number | undefined = 0;
      await link.start({
        record: () => {},
        login: () => {},
        localUsers: () => [],
        heldFrom: () => held,
        forgotten: () => {},
        crl: () => Promise.resolve(),
      });
      const nc = await natsConnect({ servers: nats.url });
      try {
        const cursors: number[] = [];
        const sub = nc.subscribe(SUBJECTS.presence, {
          callback: (_, msg) => cursors.push(parseClusterMessage(msg.data, PresenceSchema).cursor),
        });
        for (let i = 1; i <= 3; i++) {
          assert.equal((await link.publishRecord(envelope(`${i}`), `s1:${i}`)).outcome, "stored");
        }
        await pollUntil(() => link.processed === 3 || undefined, 10_000, () => "not consumed");
        // Two beats after the records were handed over (the cursor lags one beat): still 0.
        const seen = cursors.length;
        await pollUntil(() => cursors.length >= seen + 3 || undefined, 10_000, () => "no beats");
        assert.equal(Math.max(...cursors), 0, `${cursors}`);
        held = undefined;
        await pollUntil(() => cursors.at(-1) === 3 || undefined, 10_000, () => `${cursors}`);
        sub.unsubscribe();
      } finally {
        await nc.close();
      }
    });
  },
});
