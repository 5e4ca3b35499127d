/**
 * Child process of the scale bench: a server that holds many authenticated idle
 * sessions. Each connection goes through what ChatServer does for it — Admission,
 * FrameConnection, the real serverHandshake, ChatSession.start (an open transcript)
 * and session.run() waiting for frames under the idle timeout — with an in-memory
 * authenticate() instead of PBKDF2 (10,000 logins at 600,000 iterations would take
 * minutes and measure nothing about holding sessions).
 *
 * Users named probe* also join the real Lobby, so their messages are relayed as in
 * ChatServer; the idle sessions are held outside the Lobby because every join is
 * broadcast to every member (N−1 signed notices per join: N²/2 signatures to fill a
 * lobby of N, see docs/PERFORMANCE.md), which would measure that and nothing else.
 *
 *   deno run -A --v8-flags=--expose-gc bench/_scale_server.ts <pkiDir> <transcriptDir>
 *
 * Prints {"port":N}; answers {"cmd":"mem"} with the session count and Deno.memoryUsage()
 * after a full GC; exits when stdin closes.
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { SecureChatError } from "../lib/errors.ts";
import { serverHandshake } from "../lib/handshake/server.ts";
import { loadIdentity } from "../lib/identity.ts";
import { Admission } from "../lib/server/limits.ts";
import { DEFAULT_LOBBY_LIMITS, Lobby, Member } from "../lib/server/lobby.ts";
import { ChatSession } from "../lib/session/session.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { BENCH_PASSWORD, commands, reply } from "./_util.ts";

const [pkiDir, transcriptDir] = Deno.args;
const identity = await loadIdentity(`${pkiDir}/server.pem`, `${pkiDir}/server.key`);
const trust = await loadTrustStore(`${pkiDir}/ca.pem`);
const admission = new Admission({
  maxConnections: 1_000_000,
  maxConnectionsPerAddress: 1_000_000,
  maxPending: 1_000_000,
  cookieThreshold: 1_000_000,
  handshakeBurst: 1_000_000,
  handshakesPerSecond: 1_000_000,
});
const lobby = new Lobby(() => {}, {
  ...DEFAULT_LOBBY_LIMITS,
  messagesPerSecond: 1e6,
  messageBurst: 1e6,
});
let sessions = 0;
let failures = 0;
let lastError = "";

async function serve(tcp: Deno.TcpConn): Promise<void> {
  const address = tcp.remoteAddr.hostname;
  const peer = `${address}:${tcp.remoteAddr.port}`;
  const conn = new FrameConnection(tcp);
  const slot = admission.connect(address, () => conn.close());
  tcp.setNoDelay(true); // as ChatServer#serve does
  try {
    const est = await serverHandshake(conn, {
      identity,
      trust,
      admit: () => admission.admitHandshake(address),
      authenticate: (req) =>
        "password" in req && req.password === BENCH_PASSWORD
          ? Promise.resolve({ registered: false })
          : Promise.reject(new SecureChatError("AUTH_FAIL", "wrong password")),
    });
    slot.established();
    const session = await ChatSession.start(est, {
      transcripts: transcriptDirectory(transcriptDir),
      startedAt: Date.now(),
    });
    sessions++;
    try {
      if (session.username.startsWith("probe")) {
        const member = new Member(session, peer, lobby.limits, () => conn.close());
        const running = session.run({ onMessage: (m) => lobby.receive(member, m) });
        await lobby.join(member);
        await running;
        lobby.leave(member);
      } else {
        await session.run({ onMessage: () => {} });
      }
    } finally {
      sessions--;
    }
  } catch (error) {
    failures++;
    lastError = String(error);
    conn.close();
  } finally {
    slot.release();
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
reply({ port: listener.addr.port });
(async () => {
  for await (const tcp of listener) void serve(tcp).catch(() => {});
})().catch((error) => {
  lastError = `accept: ${error}`;
});

const gc = (globalThis as { gc?: () => void }).gc;
for await (const cmd of commands()) {
  if (cmd.cmd === "mem") {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    reply({ sessions, failures, lastError, gc: gc !== undefined, memory: Deno.memoryUsage() });
  }
}
listener.close();
Deno.exit(0);
