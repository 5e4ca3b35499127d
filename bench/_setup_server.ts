/**
 * Child process of the session-setup bench: accepts loopback connections and runs the
 * real server handshake (lib/handshake/server.ts) on each, then closes it. Login is
 * checked either by the real user store (SQLite, PBKDF2-SHA256 at 600,000 iterations,
 * exactly what ChatServer's authenticate does) or by an in-memory authenticate().
 *
 * Accepted sockets get TCP_NODELAY, as ChatServer sets it (lib/server/server.ts).
 *
 *   deno run -A bench/_setup_server.ts <pkiDir> <memory|store> <workDir> <user,...>
 *
 * Prints {"port":N} once listening; reads JSON commands on stdin ({"cmd":"stats"});
 * exits when stdin closes.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import type { Credentials } from "../lib/handshake/common.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import { loadIdentity } from "../lib/identity.ts";
import { SecureChatError } from "../lib/errors.ts";
import { openUserStore } from "../lib/store/open.ts";
import type { UserStore } from "../lib/store/user_store.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { BENCH_PASSWORD, commands, reply } from "./_util.ts";

const [pkiDir, mode, workDir, userList] = Deno.args;
const users = userList.split(",");
const identity = await loadIdentity(`${pkiDir}/server.pem`, `${pkiDir}/server.key`);
const trust = await loadTrustStore(`${pkiDir}/ca.pem`);

let store: UserStore | undefined;
if (mode === "store") {
  store = await openUserStore({ url: `sqlite:${workDir}/bench.db`, env: {} });
  for (const username of users) {
    await store.register({ username, email: `${username}@example.com`, password: BENCH_PASSWORD });
  }
}

const authenticate = store
  ? async (req: Credentials) => {
    await store.login(req.username, "password" in req ? req.password : "");
    return { registered: false };
  }
  : (req: Credentials) => {
    if (!users.includes(req.username) || !("password" in req) || req.password !== BENCH_PASSWORD) {
      return Promise.reject(new SecureChatError("AUTH_FAIL", "wrong user name or password"));
    }
    return Promise.resolve({ registered: false });
  };

let handshakes = 0;
let failures = 0;
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
reply({ port: listener.addr.port });

(async () => {
  for await (const tcp of listener) {
    tcp.setNoDelay(true); // as ChatServer#serve does
    const conn = new FrameConnection(tcp);
    serverHandshake(conn, { identity, trust, authenticate })
      .then(() => handshakes++, () => failures++)
      .finally(async () => {
        await conn.flush(1000);
        conn.close();
      });
  }
})().catch(() => {});

for await (const cmd of commands()) {
  if (cmd.cmd === "stats") reply({ handshakes, failures, memory: Deno.memoryUsage() });
}
listener.close();
await store?.close();
Deno.exit(0);
