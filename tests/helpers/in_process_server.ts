/**
 * A ChatServer in this process on a real SQLite store in memory, its log kept in an array:
 * for tests that drive many hostile handshakes at once (issue 11), where a `serve`
 * subprocess would add nothing but start-up time.
 */
import type { AdmissionLimits } from "../../lib/server/limits.ts";
import { transcriptDirectory } from "../../lib/transcript/file_storage.ts";
import { ChatServer, type ServerOptions } from "../../lib/server/server.ts";
import { openUserStore } from "../../lib/store/open.ts";
import type { UserStore } from "../../lib/store/user_store.ts";
import type { LoggedEvent } from "../../testkit/fuzz.ts";
import { HostileClient, type HostileOptions } from "../../testkit/hostile.ts";
import type { TestPki } from "../../testkit/pki.ts";

export interface InProcessServer {
  server: ChatServer;
  store: UserStore;
  logs: LoggedEvent[];
  /** The server's transcript directory (removed by `dispose`). */
  transcripts: string;
  /** A hostile client for `user` (its certificate from the PKI unless `identity` is given). */
  client(o: Partial<HostileOptions> & { username: string }): Promise<HostileClient>;
  dispose(): Promise<void>;
}

/** Every test client speaks from 127.0.0.1: unless a test measures them, the per-address limits
 * must not get in its way. */
const LOOPBACK_ADMISSION: AdmissionLimits = {
  maxConnections: 2048,
  maxConnectionsPerAddress: 2048,
  maxPending: 2048,
  cookieThreshold: 10_000,
  handshakeBurst: 10_000,
  handshakesPerSecond: 10_000,
};

export interface InProcessOptions extends Partial<ServerOptions> {
  /**
   * Run with `serve`'s own admission defaults (merged with `admission`, as the server does),
   * not the loopback ones: for tests that measure what a real server admits.
   */
  serverAdmission?: boolean;
}

/**
 * `accounts`: user name → password, registered before the server starts (into
 * `options.store` when given, else a fresh SQLite store in memory).
 */
export async function startInProcessServer(
  pki: TestPki,
  accounts: Record<string, string>,
  { serverAdmission = false, ...options }: InProcessOptions = {},
): Promise<InProcessServer> {
  const transcripts = await Deno.makeTempDir({ prefix: "securechat-inproc-" });
  const store = options.store ?? await openUserStore({ url: "sqlite::memory:" });
  for (const [username, password] of Object.entries(accounts)) {
    await store.register({ email: `${username}@example.com`, username, password });
  }
  const logs: LoggedEvent[] = [];
  const server = ChatServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    identity: await pki.identity("server"),
    trust: pki.trust,
    store,
    log: (event, fields = {}) => void logs.push({ event, ...fields }),
    session: { transcripts: transcriptDirectory(transcripts) },
    ...options,
    admission: serverAdmission
      ? options.admission
      : { ...LOOPBACK_ADMISSION, ...options.admission },
  });
  return {
    server,
    store,
    logs,
    transcripts,
    client: async (o) =>
      await HostileClient.connect(server.port, {
        identity: o.identity ?? await pki.identity(o.username),
        trust: pki.trust,
        password: "",
        ...o,
      }),
    async dispose() {
      await server.shutdown();
      await store.close();
      await Deno.remove(transcripts, { recursive: true });
    },
  };
}

/**
 * After the credentials went out: "auth_ok", or the code of the server's error (a record
 * under the handshake keys, or a plaintext frame from a server that has none yet).
 */
export async function answerTo(h: HostileClient): Promise<string> {
  const payload = await h.conn.readFrame(30_000);
  h.close();
  if (payload === null) return "closed";
  let content: Uint8Array;
  try {
    content = h.records!.open(payload);
  } catch {
    content = payload;
  }
  const answer = JSON.parse(new TextDecoder().decode(content));
  return answer.type === "error" ? answer.code : answer.type;
}
