/**
 * Relays on one node vs the same load across three cluster nodes (issue 15, docs/DEPLOY.md):
 * one sender and R recipients; on three nodes the sender is on node 1 and the recipients are
 * spread round robin, so every record goes through the JetStream stream (publish, store,
 * acknowledge) and each node's ordered consumer before the usual per-recipient hop. Everything
 * runs in this process against a real `nats-server -js` (Ed25519 keys: with RSA-2048 the
 * server's per-hop signatures dominate both sides alike). Reference: the same sender and
 * recipients on one node without a cluster, measured in the same run.
 *
 *   deno run -A bench/cluster_bench.ts [--quick]
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { ClusterLink } from "../lib/cluster/link.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { ChatServer } from "../lib/server/server.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { benchPkis, type Pkis, removePkis, type TestPki } from "./_pki.ts";
import {
  BENCH_PASSWORD,
  connectLikeClient,
  type Figure,
  figure,
  type Options,
  percentile,
  ref,
  round,
  type Section,
  sleep,
  summary,
} from "./_util.ts";
import { sharedPasswordStore } from "../testkit/memory_store.ts";
import { natsServerBinary, startNats } from "../testkit/nats.ts";

const TEXT = "the quick brown fox jumps over the lazy dog, 64 bytes of chat..";
const WINDOW = 32;

interface RelayRun {
  rate: number;
  latencies: number[];
}

/** Relays from user1 to the others, on `nodes` servers (1: no cluster). */
async function relay(
  pki: TestPki,
  identities: Map<string, Identity>,
  nodes: number,
  natsUrl: string,
  m: number,
  k: number,
): Promise<RelayRun> {
  const work = await Deno.makeTempDir({ prefix: "sc-bench-cluster-" });
  const store = sharedPasswordStore(BENCH_PASSWORD);
  const servers: ChatServer[] = [];
  const clients: { session: ChatSession; run: Promise<SessionEnd> }[] = [];
  try {
    for (let n = 0; n < nodes; n++) {
      const cluster = nodes === 1 ? undefined : await ClusterLink.connect({
        servers: [natsUrl],
        node: `bench${n + 1}`,
        log: () => {},
      });
      const server = ChatServer.listen({
        hostname: "127.0.0.1",
        port: 0,
        identity: await pki.identity("server"),
        trust: pki.trust,
        store,
        log: () => {},
        cluster,
        session: { transcripts: transcriptDirectory(`${work}/server${n + 1}`) },
        admission: {
          maxConnectionsPerAddress: 100_000,
          maxConnections: 100_000,
          handshakeBurst: 1e6,
          handshakesPerSecond: 1e6,
        },
        lobby: { messagesPerSecond: 1e6, messageBurst: 1e6 },
      });
      await server.startCluster();
      servers.push(server);
    }
    const names = [...identities.keys()];
    const arrivals = names.map(() => new Map<number, number>());
    for (const [i, name] of names.entries()) {
      const port = servers[i % nodes].port;
      const est = await clientHandshake(new FrameConnection(await connectLikeClient(port)), {
        identity: identities.get(name)!,
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: name, password: BENCH_PASSWORD },
      });
      const session = await ChatSession.start(est, {
        transcripts: transcriptDirectory(`${work}/${name}`),
        relayTrust: pki.trust,
      });
      const run = session.run({
        onMessage: (msg: ReceivedMessage) => {
          if (msg.type === "relay") arrivals[i].set(msg.relayed.record.seqno, performance.now());
        },
      });
      clients.push({ session, run });
    }
    await sleep(1000); // joins, notices and presence settle
    const sender = clients[0].session;
    const all = async (seqno: number) => {
      while (!arrivals.slice(1).every((a) => a.has(seqno))) await sleep(0.2);
    };
    const latencies: number[] = [];
    for (let i = 1; i <= k; i++) {
      const t0 = performance.now();
      await sender.send({ kind: "text", text: TEXT });
      await all(i);
      for (const a of arrivals.slice(1)) latencies.push(a.get(i)! - t0);
    }
    const t0 = performance.now();
    const pending: Promise<void>[] = [];
    for (let i = 0; i < m; i++) {
      pending.push(sender.send({ kind: "text", text: TEXT }).then(() => {}));
      if (pending.length >= WINDOW) await pending.shift();
    }
    await Promise.all(pending);
    await all(k + m);
    return { rate: m / ((performance.now() - t0) / 1000), latencies };
  } finally {
    await Promise.all(clients.map((c) => c.session.close().catch(() => {})));
    await Promise.allSettled(clients.map((c) => c.run));
    for (const server of servers) await server.shutdown();
    await Deno.remove(work, { recursive: true });
  }
}

export async function run(opts: Options, pkis?: Pkis): Promise<Section> {
  const binary = natsServerBinary();
  if (!("path" in binary)) {
    return {
      title: "Cluster (one node vs three)",
      figures: [],
      details: { skipped: binary.reason },
    };
  }
  const recipients = opts.quick ? 3 : 6;
  const m = opts.quick ? 150 : 2000;
  const k = opts.quick ? 30 : 200;
  const names = Array.from({ length: recipients + 1 }, (_, i) => `user${i + 1}`);
  const ownPkis = !pkis;
  pkis ??= await benchPkis(names);
  const pki = pkis.ed25519;
  const identities = new Map(
    await Promise.all(names.map(async (n) => [n, await pki.identity(n)] as const)),
  );
  const nats = await startNats();
  try {
    const one = await relay(pki, identities, 1, nats.url, m, k);
    const three = await relay(pki, identities, 3, nats.url, m, k);
    const oneRef = (what: string, value: number, unit: string) =>
      ref(`1 node, same load: ${what}`, value, unit);
    const figures: Figure[] = [
      figure(
        `3 nodes: relay 1 sender -> ${recipients} recipients, messages/s, pipelined`,
        three.rate,
        "messages/s",
        oneRef("messages/s", one.rate, "messages/s"),
      ),
      figure(
        "3 nodes: relay latency p50 (sender -> each recipient)",
        percentile(three.latencies, 50),
        "ms",
        oneRef("latency p50", percentile(one.latencies, 50), "ms"),
      ),
      figure(
        "3 nodes: relay latency p99",
        percentile(three.latencies, 99),
        "ms",
        oneRef("latency p99", percentile(one.latencies, 99), "ms"),
      ),
    ];
    return {
      title: "Cluster (one node vs three, Ed25519)",
      figures,
      details: {
        recipients,
        messages_throughput: m,
        messages_latency: k,
        window: WINDOW,
        one_node: { relay_per_s_pipelined: round(one.rate), latency_ms: summary(one.latencies) },
        three_nodes: {
          relay_per_s_pipelined: round(three.rate),
          latency_ms: summary(three.latencies),
        },
        note: "all nodes, NATS and clients share this machine's 2 cores; on three nodes " +
          "every record also goes through JetStream (file store) and each node's consumer",
      },
    };
  } finally {
    await nats.dispose();
    if (ownPkis) await removePkis(pkis);
  }
}

if (import.meta.main) {
  const section = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(section, null, 2));
}
