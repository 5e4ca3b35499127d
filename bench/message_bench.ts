/**
 * Chat messages (issue 7): signed and encrypted `msg` frames (PROTOCOL §6) per second
 * and their latency, over loopback (TCP_NODELAY on both ends, as shipped), everything
 * in this process, for RSA-2048 and Ed25519 keys:
 *  - direct: one client ChatSession to one server ChatSession (sign, seal, send,
 *    transcript append; the server verifies, opens and appends), sent two ways:
 *    "one at a time" (each `send` awaited before the next, as `connect` does today) and
 *    "pipelined" (up to WINDOW sends in flight, what a sender with a backlog of lines
 *    can do: `ChatSession.send` numbers at once, signs concurrently, sends in order);
 *  - relay: the real ChatServer and Lobby; one sender (pipelined), R recipients; the
 *    server verifies the author's signature and signs nothing, and every recipient
 *    verifies the author's signature (RelayVerifier, §6.4); a signature covers a batch
 *    of records (§6.1), so each party verifies once per batch.
 *  - per party: the same shapes (direct 1 -> 1 as a private message, relay 1 -> R to the
 *    lobby) with the server and the recipients each in a child process of their own, so each
 *    party's CPU per message is read apart; issue 12's relay goal asks relay messages/s ≥ 0.5×
 *    direct, and as deployed (every party on its own machine) the busiest party bounds each
 *    rate. Everything-in-one-process cannot meet it whatever the protocol: its raw crypto
 *    alone (1 sign, R + 1 verifications) is ~3.7× a direct message's with Ed25519 keys.
 * Reference in the same run: the sender's signature operation timed alone — every
 * message needs one, so sequential signing is the ceiling of one-at-a-time sending —
 * and the same with WINDOW in flight (both cores), the ceiling of pipelined sending;
 * and the raw per-message crypto (issue 12): one sign + one seal + one verify + one open
 * (a statement-sized input, a one-granule record), timed alone in sequence.
 * On a shared machine rates measured minutes apart see different loads, so the same
 * comparisons are also given in CPU time of this process (all threads, /proc): CPU per
 * direct message and per relayed message against the CPU of the raw crypto, which
 * other processes' load hardly moves.
 *
 *   deno run -A bench/message_bench.ts [--quick]
 */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { randomBytes } from "../lib/bytes.ts";
import { importVerifyingKeySpki, sign, verify } from "../lib/crypto/signature.ts";
import { openRecord, RECORD_PADDING, sealRecord } from "../lib/handshake/record.ts";
import { parseCertificate } from "../lib/pki/certificate.ts";
import { clientHandshake } from "../lib/handshake/client.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { ChatServer } from "../lib/server/server.ts";
import { LOBBY, userRecipient } from "../lib/message/record.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { BENCH_KEY_TYPES, benchPkis, type Pkis, removePkis, type TestPki } from "./_pki.ts";
import {
  BENCH_PASSWORD,
  connectLikeClient,
  type Figure,
  figure,
  JsonChild,
  loginLikeClient,
  loopbackPair,
  type Options,
  percentile,
  rateOf,
  ref,
  round,
  type Section,
  serveV8Flags,
  sleep,
  summary,
  timeOp,
  v8FlagsOfThisProcess,
} from "./_util.ts";
import { sharedPasswordStore } from "../testkit/memory_store.ts";
import { sampleProcess, threadTimes } from "./_proc.ts";
import { cpuAddedByThread } from "../testkit/burst_parts.ts";

/**
 * CPU µs per call of `op`, called until the process has spent `seconds` of CPU: /proc
 * counts in 10 ms ticks, so a short loop could read as zero.
 */
async function cpuPerCall(op: () => Promise<unknown>, seconds: number): Promise<number> {
  const before = await sampleProcess(Deno.pid);
  let calls = 0;
  let spent = 0;
  while (spent < seconds) {
    for (let i = 0; i < 50; i++) await op();
    calls += 50;
    spent = (await sampleProcess(Deno.pid)).cpuSeconds - before.cpuSeconds;
  }
  return spent * 1e6 / calls;
}

/**
 * This process's CPU time while `work` runs, in µs: what each of its threads added, from the
 * scheduler's ns count (threadTimes, cpuAddedByThread), not /proc/<pid>/stat's 10 ms ticks, in
 * which a quick run's relay read 0 (75 lines, ~10 ms of every party's CPU since a msg carries a
 * batch: CI at 9aec391).
 */
async function cpuMicros(work: () => Promise<unknown>): Promise<number> {
  const before = await threadTimes(Deno.pid);
  await work();
  const added = cpuAddedByThread(before, await threadTimes(Deno.pid));
  return Object.values(added).reduce((a, s) => a + s, 0) * 1e6;
}

const TEXT = "the quick brown fox jumps over the lazy dog, 64 bytes of chat..";
/** Sends in flight for "pipelined" (the lobby's RELAY_WINDOW is the same size). */
export const WINDOW = 32;

/**
 * Sends `m` messages with at most `window` unresolved sends (1 = await each send);
 * sends complete in seqno order, so waiting for the oldest keeps the window.
 */
async function sendMany(
  session: ChatSession,
  m: number,
  window: number,
  to?: string,
): Promise<void> {
  const pending: Promise<void>[] = [];
  for (let i = 0; i < m; i++) {
    pending.push(session.send({ kind: "text", text: TEXT }, to).then(() => {}));
    if (pending.length >= window) await pending.shift();
  }
  await Promise.all(pending);
}

/** Resolves waiters when a counter reaches a value. */
class Arrivals {
  readonly at = new Map<number, number>();
  #waiters: { n: number; resolve: () => void }[] = [];
  count = 0;

  add(key: number): void {
    this.at.set(key, performance.now());
    this.count++;
    this.#waiters = this.#waiters.filter((w) => {
      if (this.count < w.n) return true;
      w.resolve();
      return false;
    });
  }

  until(n: number, timeoutMs = 60_000): Promise<void> {
    if (this.count >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`only ${this.count}/${n} arrived`)),
        timeoutMs,
      );
      this.#waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }
}

async function direct(pki: TestPki, server: Identity, client: Identity, m: number, k: number) {
  const transcripts = await Deno.makeTempDir({ prefix: "sc-bench-msg-" });
  try {
    const { server: sConn, client: cConn } = await loopbackPair();
    const [s, c] = await Promise.all([
      serverHandshake(sConn, {
        identity: server,
        trust: pki.trust,
        authenticate: () => Promise.resolve({ registered: false }),
      }),
      clientHandshake(cConn, {
        identity: client,
        trust: pki.trust,
        serverName: "localhost",
        credentials: { mode: "login", username: "user1", password: BENCH_PASSWORD },
      }),
    ]);
    const serverSession = await ChatSession.start(s, {
      transcripts: transcriptDirectory(transcripts),
    });
    const clientSession = await ChatSession.start(c, {
      transcripts: transcriptDirectory(transcripts),
    });
    const arrivals = new Arrivals();
    const serverRun = serverSession.run({ onMessage: (msg) => arrivals.add(msg.seqno) });
    const clientRun = clientSession.run({ onMessage: () => {} });

    // Latency: one message at a time, send() to the server's onMessage.
    const latencies: number[] = [];
    for (let i = 1; i <= k; i++) {
      const t0 = performance.now();
      await clientSession.send({ kind: "text", text: TEXT });
      await arrivals.until(i);
      latencies.push(arrivals.at.get(i)! - t0);
    }
    // Throughput: m messages, until the server accepted the last.
    let cpuPerMessage = 0;
    const rateWith = async (window: number) => {
      const before = arrivals.count;
      const t0 = performance.now();
      cpuPerMessage = await cpuMicros(async () => {
        await sendMany(clientSession, m, window);
        await arrivals.until(before + m);
      }) / m;
      return m / ((performance.now() - t0) / 1000);
    };
    // One at a time, m lines take a third of a second: one run read 0.50 and the next 0.36 of
    // the raw rate a minute apart (session 10), so the figure is the median of three runs.
    const sequentialRuns = [await rateWith(1), await rateWith(1), await rateWith(1)];
    const sequential = percentile(sequentialRuns, 50);
    const pipelined = await rateWith(WINDOW); // leaves the pipelined CPU in cpuPerMessage

    await clientSession.close();
    await Promise.all([serverRun, clientRun]);
    return { sequential, sequentialRuns, pipelined, latencies, cpuPerMessage };
  } finally {
    await Deno.remove(transcripts, { recursive: true });
  }
}

async function relay(
  pki: TestPki,
  identities: Map<string, Identity>,
  recipients: number,
  m: number,
  k: number,
) {
  const work = await Deno.makeTempDir({ prefix: "sc-bench-relay-" });
  const store = sharedPasswordStore(BENCH_PASSWORD);
  const server = ChatServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    identity: await pki.identity("server"),
    trust: pki.trust,
    store,
    log: () => {},
    session: { transcripts: transcriptDirectory(`${work}/server`) },
    admission: {
      maxConnectionsPerAddress: 100_000,
      maxConnections: 100_000,
      handshakeBurst: 1e6,
      handshakesPerSecond: 1e6,
    },
    lobby: { messagesPerSecond: 1e6, messageBurst: 1e6 },
  });
  const names = [...identities.keys()].slice(0, recipients + 1);
  const arrivals = names.map(() => new Arrivals());
  const clients: { session: ChatSession; run: Promise<SessionEnd> }[] = [];
  try {
    for (const [i, name] of names.entries()) {
      const conn = new FrameConnection(await connectLikeClient(server.port));
      const est = await clientHandshake(conn, {
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
          if (msg.type === "relay") arrivals[i].add(msg.relayed.record.seqno);
        },
      });
      clients.push({ session, run });
    }
    await sleep(300); // join notices settle
    const sender = clients[0].session;
    const all = (n: number) => Promise.all(arrivals.slice(1).map((a) => a.until(n)));

    const latencies: number[] = [];
    for (let i = 1; i <= k; i++) {
      const t0 = performance.now();
      await sender.send({ kind: "text", text: TEXT });
      await all(i);
      for (const a of arrivals.slice(1)) latencies.push(a.at.get(i)! - t0);
    }
    const t0 = performance.now();
    const cpu = await cpuMicros(async () => {
      await sendMany(sender, m, WINDOW);
      await all(k + m);
    });
    const rate = m / ((performance.now() - t0) / 1000);
    return { rate, latencies, cpuPerMessage: cpu / m };
  } finally {
    await server.shutdown();
    await Promise.allSettled(clients.map((c) => c.run));
    await Deno.remove(work, { recursive: true });
  }
}

const PEER_SERVER_SCRIPT = new URL("./_peer_server.ts", import.meta.url).pathname;
const RECIPIENTS_SCRIPT = new URL("./_recipients.ts", import.meta.url).pathname;

/** CPU µs per message of each party (`recipient`: of one recipient) and the wall-clock rate. */
interface PartyCosts {
  sender: number;
  server: number;
  recipient: number;
  rate: number;
}

/**
 * A message's CPU by party, each party in a process of its own as deployed: the real
 * ChatServer in a child (bench/_peer_server.ts, as the peer bench runs it), `recipients`
 * verifying clients in another (bench/_recipients.ts), the sender in this process. One
 * recipient gets private messages (1 -> 1, `user:`), more get lobby lines. `m` messages
 * pipelined after `warm` not measured (the children's JIT compiles the path in those).
 */
async function perParty(
  pki: TestPki,
  names: string[],
  recipients: number,
  m: number,
  warm: number,
): Promise<PartyCosts> {
  const work = await Deno.makeTempDir({ prefix: "sc-bench-parties-" });
  const flags = await serveV8Flags();
  const server = new JsonChild(PEER_SERVER_SCRIPT, [pki.dir, `${work}/server`, "coalesced"], flags);
  let readers: JsonChild | undefined;
  let sender: { session: ChatSession; run: Promise<SessionEnd> } | undefined;
  try {
    const { port } = await server.next() as { port: number };
    readers = new JsonChild(RECIPIENTS_SCRIPT, [
      pki.dir,
      String(port),
      `${work}/recipients`,
      ...names.slice(1, 1 + recipients),
    ], flags);
    await readers.next(); // {"ready":true}
    const est = await loginLikeClient(port, pki.trust, await pki.identity(names[0]), names[0]);
    const session = await ChatSession.start(est, {
      transcripts: transcriptDirectory(`${work}/sender`),
      serverName: "localhost",
      relayTrust: pki.trust,
    });
    sender = { session, run: session.run({ onMessage: () => {} }) };
    await sleep(300); // join notices settle
    const to = recipients === 1 ? userRecipient(names[1]) : LOBBY;
    await sendMany(session, warm, WINDOW, to);
    await readers.request({ cmd: "wait", n: warm });
    const pids = [Deno.pid, server.pid, readers.pid];
    const before = await Promise.all(pids.map(sampleProcess));
    const t0 = performance.now();
    const delivered = readers.request({ cmd: "wait", n: warm + m });
    await sendMany(session, m, WINDOW, to);
    await delivered;
    const wallSeconds = (performance.now() - t0) / 1000;
    const after = await Promise.all(pids.map(sampleProcess));
    const micros = after.map((a, i) => (a.cpuSeconds - before[i].cpuSeconds) * 1e6);
    return {
      sender: micros[0] / m,
      server: micros[1] / m,
      recipient: micros[2] / (m * recipients),
      rate: m / wallSeconds,
    };
  } finally {
    await sender?.session.close().catch(() => {});
    await sender?.run;
    await readers?.stop();
    await server.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Messages/s if each party had a machine of its own: the busiest one's CPU bounds the rate. */
const ownMachinesRate = (c: PartyCosts) => 1e6 / Math.max(c.sender, c.server, c.recipient);

export async function run(opts: Options, pkis?: Pkis): Promise<Section> {
  const recipients = opts.quick ? 2 : 4;
  const m = opts.quick ? 150 : 2000;
  const k = opts.quick ? 30 : 200;
  const names = Array.from({ length: recipients + 1 }, (_, i) => `user${i + 1}`);
  const ownPkis = !pkis;
  pkis ??= await benchPkis(names);
  const figures: Figure[] = [];
  const details: Record<string, unknown> = {
    messages_throughput: m,
    messages_latency: k,
    window: WINDOW,
    relay_recipients: recipients,
    relay_messages_throughput: Math.round(m / 2),
    modes: {
      "one at a time": "each send awaited before the next (what `connect` does per line today)",
      pipelined: `up to ${WINDOW} sends in flight; ChatSession.send numbers them at once, ` +
        "signs concurrently, sends and records in seqno order",
    },
    signatures_per_relayed_message: "1 (author); the server signs nothing (PROTOCOL §6.4)",
    verifications_per_relayed_message:
      `1 (server: author) + ${recipients} (each recipient: author)`,
    note:
      "sender, server and recipients share this process (2 cores); TCP_NODELAY on both ends, as shipped",
    // The same V8 settings as the shipped `securechat` (deno.json's start task), or not: said.
    v8_flags: await v8FlagsOfThisProcess(),
  };
  try {
    for (const kt of BENCH_KEY_TYPES) {
      const pki = pkis[kt.type];
      const L = kt.label;
      const identities = new Map(
        await Promise.all(names.map(async (n) => [n, await pki.identity(n)] as const)),
      );
      const serverId = await pki.identity("server");
      const sender = identities.get("user1")!;

      // The limit: the sender's signature alone, sequential (one at a time) and with
      // WINDOW in flight (what both cores give a pipelined sender).
      const digest = randomBytes(32);
      const signMs = await timeOp(() => sign(sender.signingKey, digest), opts.quick ? 200 : 1500);
      const rawSign = 1000 / signMs;
      const rawSignWindow = await rateOf(
        () => sign(sender.signingKey, digest),
        WINDOW,
        opts.quick ? 200 : 1500,
      );

      // The raw crypto of one message end to end: the author signs, the record is sealed,
      // the receiver verifies and opens (the content key's HMACs and AES are the same
      // order of cost as the record's seal and are not counted: this is the lower bound).
      const senderKey = await importVerifyingKeySpki(parseCertificate(sender.certDer).spki);
      const statementBytes = randomBytes(128);
      const recordBytes = randomBytes(RECORD_PADDING);
      // The record's AEAD (ChaCha20-Poly1305, PROTOCOL §3.2) at counter 0 each time: a fixed
      // nonce is harmless in a timing loop.
      const recordKeys = { key: randomBytes(32), iv: randomBytes(12) };
      const rawMessage = async () => {
        const signature = await sign(sender.signingKey, statementBytes);
        const sealed = sealRecord(recordKeys, 0, recordBytes);
        if (!await verify(senderKey, statementBytes, signature)) throw new Error("bench: verify");
        openRecord(recordKeys, 0, sealed);
      };
      const rawMsgMs = await timeOp(rawMessage, opts.quick ? 200 : 1500);
      const rawMsg = 1000 / rawMsgMs;
      const rawCpu = await cpuPerCall(rawMessage, opts.quick ? 0.1 : 0.6);
      // The same for a relayed message, which no design can make cheaper while every
      // party checks authorship end to end (issue 12 item 6): the author signs once, the
      // server and each recipient verify, and each hop seals and opens a record.
      const rawRelay = async () => {
        const signature = await sign(sender.signingKey, statementBytes);
        for (let hop = 0; hop <= recipients; hop++) {
          const sealed = sealRecord(recordKeys, 0, recordBytes);
          if (!await verify(senderKey, statementBytes, signature)) throw new Error("bench: verify");
          openRecord(recordKeys, 0, sealed);
        }
      };
      const rawRelayCpu = await cpuPerCall(rawRelay, opts.quick ? 0.1 : 0.6);

      const d = await direct(pki, serverId, sender, m, k);
      const r = await relay(pki, identities, recipients, Math.round(m / 2), Math.round(k / 2));
      // /proc counts CPU in 10 ms ticks: 1,000 messages give the cheapest party (an Ed25519
      // sender, ~40 µs a message) four ticks, so even a quick run cannot read zero (100 did).
      const partyMessages = 1000;
      const partyWarm = opts.quick ? 50 : 200;
      const dp = await perParty(pki, names, 1, partyMessages, partyWarm);
      const rp = await perParty(pki, names, recipients, partyMessages, partyWarm);
      const partyMicros = (c: PartyCosts) => ({
        sender_us: round(c.sender, 1),
        server_us: round(c.server, 1),
        each_recipient_us: round(c.recipient, 1),
        wall_rate_sharing_2_cores: round(c.rate, 1),
      });
      details[`${kt.type}_per_party`] = {
        messages: partyMessages,
        warm_up: partyWarm,
        direct_1_to_1: partyMicros(dp),
        [`relay_1_to_${recipients}`]: partyMicros(rp),
      };

      const signRef = ref(`${kt.sign} alone, sequential`, rawSign, "signatures/s");
      const signWinRef = ref(
        `${kt.sign} alone, ${WINDOW} in flight (all cores)`,
        rawSignWindow,
        "signatures/s",
      );
      const goal = { goal: ">= 0.8 of raw signing (issue 7)" };
      const dLat = percentile(d.latencies, 50);
      const rawMsgRef = ref(
        `one ${kt.sign} + seal + verify + open alone, sequential`,
        rawMsg,
        "messages/s",
      );
      const cryptoGoal = { goal: ">= 0.5 of raw sign+seal+verify+open (issue 12)" };
      figures.push(
        figure(
          `${L}: direct messages/s, one at a time (await each send)`,
          d.sequential,
          "messages/s",
          rawMsgRef,
          cryptoGoal,
        ),
        figure(
          `${L}: direct messages/s, pipelined (${WINDOW} in flight)`,
          d.pipelined,
          "messages/s",
          rawMsgRef,
          cryptoGoal,
        ),
        figure(
          `${L}: direct messages/s, one at a time (await each send)`,
          d.sequential,
          "messages/s",
          signRef,
          goal,
        ),
        figure(
          `${L}: direct messages/s, pipelined (${WINDOW} in flight)`,
          d.pipelined,
          "messages/s",
          signRef,
          goal,
        ),
        figure(
          `${L}: direct messages/s, pipelined (${WINDOW} in flight)`,
          d.pipelined,
          "messages/s",
          signWinRef,
        ),
        figure(`${L}: direct latency p50`, dLat, "ms", ref(`one ${kt.sign} alone`, signMs, "ms")),
        figure(
          `${L}: direct latency p99`,
          percentile(d.latencies, 99),
          "ms",
          ref("direct latency p50", dLat, "ms"),
        ),
        figure(
          `${L}: relay 1 sender -> ${recipients} recipients, messages/s, pipelined (all delivered)`,
          r.rate,
          "messages/s",
          signRef,
          goal,
        ),
        figure(
          `${L}: relay deliveries/s (${recipients} per message)`,
          r.rate * recipients,
          "deliveries/s",
          ref(
            `${kt.sign} alone, ${WINDOW} in flight (v2: the server signs no delivery)`,
            rawSignWindow,
            "signatures/s",
          ),
        ),
        figure(
          `${L}: CPU per direct message, pipelined (sender + server, this process)`,
          d.cpuPerMessage,
          "us",
          ref(`CPU of one ${kt.sign} + seal + verify + open alone`, rawCpu, "us"),
          { goal: "<= 2 (the CPU form of >= 0.5 of raw crypto, issue 12)" },
        ),
        figure(
          `${L}: CPU per relayed message, 1 -> ${recipients} (sender + server + recipients)`,
          r.cpuPerMessage,
          "us",
          ref("CPU per direct message, pipelined", d.cpuPerMessage, "us"),
          {
            goal: `<= 2 (the CPU form of >= 0.5 of direct, issue 12; ${recipients} recipients ` +
              "verify in this process)",
          },
        ),
        figure(
          `${L}: relay 1 -> ${recipients} messages/s, each party on its own machine ` +
            "(1 / the busiest party's CPU per message)",
          ownMachinesRate(rp),
          "messages/s",
          ref(
            "the same for a direct message 1 -> 1 (private, through the server)",
            ownMachinesRate(dp),
            "messages/s",
          ),
          {
            goal:
              ">= 0.5 (issue 12, as deployed: sender, server and recipients on separate machines)",
          },
        ),
        figure(
          `${L}: server CPU per relayed message, 1 -> ${recipients} (server in its own process)`,
          rp.server,
          "us",
          ref("server CPU per direct message 1 -> 1", dp.server, "us"),
        ),
        figure(
          `${L}: a recipient's CPU per relayed message (${recipients} recipients in their own process)`,
          rp.recipient,
          "us",
          ref("the sender's CPU per message (this process)", rp.sender, "us"),
        ),
        figure(
          `${L}: raw crypto of a relayed message, 1 -> ${recipients} (1 sign, ` +
            `${recipients + 1} verify + seal + open)`,
          rawRelayCpu,
          "us",
          ref(`CPU of one ${kt.sign} + seal + verify + open alone`, rawCpu, "us"),
          {
            goal: "the floor of relay ÷ direct above if both ran at their raw crypto's cost " +
              "(no protocol overhead at all)",
          },
        ),
        figure(
          `${L}: relayed message's CPU ÷ its raw crypto (the protocol's overhead on a relay)`,
          r.cpuPerMessage / rawRelayCpu,
          "x",
          ref("direct message's CPU ÷ its raw crypto", d.cpuPerMessage / rawCpu, "x"),
        ),
        figure(
          `${L}: relay latency p50 (sender -> each recipient)`,
          percentile(r.latencies, 50),
          "ms",
          ref("direct latency p50", dLat, "ms"),
        ),
        figure(
          `${L}: relay latency p99`,
          percentile(r.latencies, 99),
          "ms",
          ref("direct latency p50", dLat, "ms"),
        ),
      );
      details[kt.type] = {
        raw_sign_ms: round(signMs, 4),
        raw_sign_seal_verify_open_per_s: round(rawMsg),
        raw_sign_seal_verify_open_cpu_us: round(rawCpu),
        raw_relay_crypto_cpu_us: round(rawRelayCpu),
        direct_cpu_us_per_message_pipelined: round(d.cpuPerMessage),
        relay_cpu_us_per_message: round(r.cpuPerMessage),
        raw_sign_per_s_sequential: round(rawSign),
        [`raw_sign_per_s_${WINDOW}_in_flight`]: round(rawSignWindow),
        direct_per_s_one_at_a_time: round(d.sequential),
        direct_per_s_one_at_a_time_runs: d.sequentialRuns.map((rate) => round(rate)),
        direct_per_s_pipelined: round(d.pipelined),
        direct_latency_ms: summary(d.latencies),
        relay_per_s_pipelined: round(r.rate),
        relay_latency_ms: summary(r.latencies),
      };
    }
  } finally {
    if (ownPkis) await removePkis(pkis);
  }
  return { title: "Messages (signed + encrypted)", figures, details };
}

if (import.meta.main) {
  const section = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(section, null, 2));
}
