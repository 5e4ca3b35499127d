/**
 * The reconnect storm (issue 15, docs/DEPLOY.md §8): N users logged in on node 1 of a real
 * cluster (three `serve` processes sharing a throwaway MariaDB and `nats-server -js`), node 1
 * SIGKILLed, every user reconnecting to node 2 with the resumption ticket of its login; then
 * node 2 SIGKILLed and the same users reconnecting to node 3 with their passwords (PBKDF2 on
 * every login) for contrast. Reference, same run: N in-memory-auth setups (the setup bench's
 * server child, no lobby behind it) at the same number in flight. RSA-2048 keys, the default.
 *
 * "Back" means the handshake completed: `auth_ok` read, both Finished exchanged, the session
 * established and joined to the node's lobby. After that the clients read nothing, as a
 * client busy redrawing would; the lobby's join notices still cost the node their work.
 * The storm's clock starts at the SIGKILL (clients notice the drop at once) and stops when
 * the last of the N is back. At most IN_FLIGHT handshakes run at a time (PASSWORD_IN_FLIGHT
 * for password logins). A handshake that fails (a timeout while the node is saturated) is
 * tried again after a jittered pause, as `connect --reconnect` does, up to MAX_ATTEMPTS: a
 * wave ends when everyone is back, and reports how many retries that took.
 *
 *   deno run -A bench/storm_bench.ts [--quick]     N = 1,000 (24 with --quick)
 *   STORM_USERS=200 deno run -A bench/storm_bench.ts   another N
 *   STORM_PASSWORDS=0 ...   no password storm (at N = 1,000 on a loaded machine it alone
 *                           takes many minutes; the first logins are password logins anyway)
 */
import { clientHandshake } from "../lib/handshake/client.ts";
import { codeOf } from "../lib/errors.ts";
import type { Identity } from "../lib/handshake/common.ts";
import { openUserStore } from "../lib/store/open.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { freePort } from "../testkit/local_service.ts";
import { mysqlTestTarget, startMariaDb } from "../testkit/mariadb.ts";
import { natsServerBinary, startNats } from "../testkit/nats.ts";
import { logIs, pollUntil, ServerProcess } from "../testkit/server_process.ts";
import { benchPkis, mintClientIdentities, type Pkis, removePkis, type TestPki } from "./_pki.ts";
import {
  BENCH_PASSWORD,
  connectLikeClient,
  figure,
  JsonChild,
  type Options,
  ref,
  round,
  type Section,
  sleep,
} from "./_util.ts";

const SETUP_SERVER = new URL("./_setup_server.ts", import.meta.url).pathname;
const IN_FLIGHT = 64;
/**
 * Password logins in flight: each waits for its PBKDF2 behind the others', and at 64 most
 * run past the handshake timeout; 8 keeps the node as busy without timing any out.
 */
const PASSWORD_IN_FLIGHT = 8;
/** Handshakes per user per wave before the user counts as failed. */
const MAX_ATTEMPTS = 5;
const TITLE = "Reconnect storm (3-node cluster, RSA-2048)";

interface User {
  name: string;
  identity: Identity;
  ticket?: Uint8Array;
  conn?: FrameConnection;
}

interface Wave {
  seconds: number;
  /** Users not back after MAX_ATTEMPTS handshakes. */
  failures: number;
  /** Handshakes that failed and were tried again. */
  retries: number;
  /** Logins the server answered with a ticket (resumption keeps working). */
  tickets: number;
  /** Why the first failed handshake failed. */
  firstError?: string;
}

/** Runs `work` on every item, at most `inFlight` at once. */
async function bounded<T>(
  items: T[],
  inFlight: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, items.length) }, async () => {
      while (next < items.length) await work(items[next++]);
    }),
  );
}

/** One handshake per user to `port`: a ticket if the user has one and `resume`, else the password. */
async function wave(
  port: number,
  pki: TestPki,
  users: User[],
  resume: boolean,
): Promise<Wave> {
  let failures = 0;
  let retries = 0;
  let tickets = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  await bounded(users, resume ? IN_FLIGHT : PASSWORD_IN_FLIGHT, async (user) => {
    for (let attempt = 1;; attempt++) {
      const ticket = resume ? user.ticket : undefined;
      const conn = new FrameConnection(await connectLikeClient(port));
      try {
        const est = await clientHandshake(conn, {
          identity: user.identity,
          trust: pki.trust,
          serverName: "localhost",
          credentials: ticket
            ? { mode: "resume", username: user.name, ticket, wantTicket: true }
            : { mode: "login", username: user.name, password: BENCH_PASSWORD, wantTicket: true },
        });
        user.ticket = est.ticket;
        if (est.ticket) tickets++;
        user.conn = conn;
        return;
      } catch (error) {
        conn.close();
        firstError ??= String(error);
        if (attempt >= MAX_ATTEMPTS) {
          failures++;
          return;
        }
        retries++;
        // A refused ticket (claimed by an attempt that then timed out) falls back to the
        // password at once, as connect does; anything else waits a jittered moment.
        if (ticket && codeOf(error) === "AUTH_FAIL") user.ticket = undefined;
        else await sleep(250 + Math.random() * 750);
      }
    }
  });
  return { seconds: (performance.now() - t0) / 1000, failures, retries, tickets, firstError };
}

/** N in-memory-auth setups against the setup bench's server child. */
async function referenceWave(pki: TestPki, users: User[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "sc-bench-storm-ref-" });
  const child = new JsonChild(SETUP_SERVER, [
    pki.dir,
    "memory",
    dir,
    users.map((u) => u.name).join(","),
  ]);
  try {
    const { port } = await child.next() as { port: number };
    let failures = 0;
    const t0 = performance.now();
    await bounded(users, IN_FLIGHT, async (user) => {
      const conn = new FrameConnection(await connectLikeClient(port));
      try {
        await clientHandshake(conn, {
          identity: user.identity,
          trust: pki.trust,
          serverName: "localhost",
          credentials: { mode: "login", username: user.name, password: BENCH_PASSWORD },
        });
      } catch {
        failures++;
      } finally {
        conn.close();
      }
    });
    if (failures > 0) throw new Error(`${failures} reference setups failed`);
    return (performance.now() - t0) / 1000;
  } finally {
    await child.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

function dropAll(users: User[]): void {
  for (const user of users) {
    user.conn?.close();
    user.conn = undefined;
  }
}

/** How many `LOGIN method=ticket` lines the node logged, once `expected` arrive (or 10 s passed). */
async function loggedResumes(node: ServerProcess, expected: number): Promise<number> {
  const count = () => node.events(logIs("LOGIN", { method: "ticket" })).length;
  return await pollUntil(() => count() >= expected ? count() : undefined, 10_000, () => "")
    .catch(count);
}

async function kill(node: ServerProcess): Promise<void> {
  node.child.kill("SIGKILL");
  await node.child.status;
}

export async function run(opts: Options, pkis?: Pkis): Promise<Section> {
  const missing = [
    mysqlTestTarget().kind === "local" ? undefined : "mariadbd",
    "path" in natsServerBinary() ? undefined : "nats-server",
  ].filter(Boolean);
  if (missing.length > 0) {
    const skipped = `needs ${missing.join(", ")} (apt-get install mariadb-server nats-server)`;
    return { title: TITLE, figures: [], skipped, details: { skipped } };
  }
  const n = Number(Deno.env.get("STORM_USERS") ?? (opts.quick ? 24 : 1000));
  const withPasswords = Deno.env.get("STORM_PASSWORDS") !== "0";
  const ownPkis = !pkis;
  pkis ??= await benchPkis([]);
  const pki = pkis.rsa2048;
  const names = Array.from({ length: n }, (_, i) => `storm${String(i + 1).padStart(4, "0")}`);
  const identities = await mintClientIdentities(pki.dir, names);
  const users: User[] = names.map((name, i) => ({ name, identity: identities[i] }));

  const db = await startMariaDb();
  const nats = await startNats();
  const nodes: ServerProcess[] = [];
  const workDirs: string[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const workDir = await Deno.makeTempDir({ prefix: `sc-bench-storm-n${i + 1}-` });
      workDirs.push(workDir);
      const node = await ServerProcess.start({
        pkiDir: pki.dir,
        workDir,
        args: [
          ...["--db", db.url, "--cluster", nats.url, "--node", `n${i + 1}`],
          ...["--health-port", String(freePort())],
          // Every bench user comes from 127.0.0.1.
          ...["--max-per-address", "100000", "--max-connections", "100000"],
          ...["--handshake-rate", "100000"],
        ],
      });
      await node.waitFor(logIs("HEALTH"), 30_000);
      nodes.push(node);
    }
    await registerAll(db.url, names, (sql) => db.sql(sql));

    const reference = await referenceWave(pki, users);
    const login = await wave(nodes[0].port, pki, users, false);
    if (login.failures > 0) {
      throw new Error(`${login.failures} of ${n} first logins failed: ${login.firstError}`);
    }
    await sleep(1000); // joins and presence settle before the crash

    await kill(nodes[0]);
    dropAll(users);
    const resumed = await wave(nodes[1].port, pki, users, true);
    const resumes = await loggedResumes(nodes[1], n - resumed.failures);
    await sleep(1000);

    let passwords: Wave | undefined;
    if (withPasswords) {
      await kill(nodes[1]);
      dropAll(users);
      passwords = await wave(nodes[2].port, pki, users, false);
      dropAll(users);
    }

    const refFig = ref(`${n} in-memory-auth setups, ${IN_FLIGHT} in flight`, reference, "s");
    return {
      title: TITLE,
      figures: [
        figure(
          `storm: ${n} users back on node 2 after node 1 SIGKILLed, with tickets`,
          resumed.seconds,
          "s",
          refFig,
          { goal: "<= 2x" },
        ),
        ...(passwords
          ? [figure(
            `storm: ${n} users back on node 3 after node 2 SIGKILLed, passwords (no tickets), ${PASSWORD_IN_FLIGHT} in flight`,
            passwords.seconds,
            "s",
            refFig,
          )]
          : []),
      ],
      details: {
        users: n,
        in_flight: IN_FLIGHT,
        password_in_flight: PASSWORD_IN_FLIGHT,
        reference_seconds: round(reference),
        first_login_seconds: round(login.seconds),
        first_login_retries: login.retries,
        ticket_storm: { ...resumed, seconds: round(resumed.seconds), logins_by_ticket: resumes },
        password_storm: passwords
          ? { ...passwords, seconds: round(passwords.seconds) }
          : "not run (STORM_PASSWORDS=0)",
        note: "three serve processes, nats-server, mariadbd and the N clients share this " +
          "machine's cores; back = handshake complete and joined; the clients read nothing after",
      },
    };
  } finally {
    dropAll(users);
    await Promise.all(nodes.map((node) => node.stop().catch(() => {})));
    await nats.dispose();
    await db.dispose();
    for (const dir of workDirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
    if (ownPkis) await removePkis(pkis);
  }
}

/**
 * The N accounts, all with the bench password: one real registration (one PBKDF2), copied
 * row by row in SQL so that setting up 1,000 users does not cost 1,000 password hashes.
 */
async function registerAll(
  url: string,
  names: string[],
  sql: (text: string) => Promise<string>,
): Promise<void> {
  const store = await openUserStore({ url, env: {} });
  try {
    await store.register({
      username: names[0],
      email: `${names[0]}@example.com`,
      password: BENCH_PASSWORD,
    });
  } finally {
    await store.close();
  }
  const database = new URL(url).pathname.slice(1);
  const copies = names.slice(1).map((name) =>
    `INSERT INTO users (username, email, password_scheme, password_iterations, password_salt,
      password_hash, created_at) SELECT '${name}', '${name}@example.com', password_scheme,
      password_iterations, password_salt, password_hash, created_at FROM users
      WHERE username = '${names[0]}';`
  );
  await sql(`USE ${database};\n${copies.join("\n")}`);
}

if (import.meta.main) {
  const section = await run({ quick: Deno.args.includes("--quick") });
  console.log(JSON.stringify(section, null, 2));
}
