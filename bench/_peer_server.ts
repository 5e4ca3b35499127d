/**
 * Child process of the peer bench (issue 18): securechat's real ChatServer — admission,
 * handshake, chat sessions with transcripts, the lobby, the end-to-end key directory — in a
 * process of its own, so the bench can read its CPU time and RSS from /proc as it reads
 * InspIRCd's. Logins are checked by the in-memory store (testkit/memory_store.ts: no PBKDF2,
 * which would dominate setup and is not what the comparison is about); the key directory
 * (PROTOCOL §12.6, what end-to-end lobby lines need before their sender chains can go out) is
 * the real SQLite one, in a file beside the transcripts; admission and lobby rate limits are
 * lifted as InspIRCd's flood control is switched off.
 *
 *   deno run -A --v8-flags=--expose-gc bench/_peer_server.ts <pkiDir> <transcriptDir> each|coalesced
 *
 * Prints {"port":N}; answers {"cmd":"gc"} after full garbage collections with
 * Deno.memoryUsage(), the resident size of each V8 heap space and of the process's native
 * heap and other anonymous mappings (memoryMap below); exits when stdin closes (without closing sessions: the bench
 * has measured what it wanted by then).
 */
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { loadIdentity } from "../lib/identity.ts";
import { ChatServer } from "../lib/server/server.ts";
import { createLogger } from "../lib/log.ts";
import { PRESENCE_NOTICE_WINDOW_MS } from "../lib/server/presence.ts";
import { sharedPasswordStore } from "../testkit/memory_store.ts";
import { openUserStore } from "../lib/store/open.ts";
import { BENCH_PASSWORD, commands, reply, sleep } from "./_util.ts";
import { getHeapSpaceStatistics } from "node:v8";

const [pkiDir, transcriptDir, presence] = Deno.args;
const logFile = `${transcriptDir}.log`;
const keys = (await openUserStore({ url: `sqlite:${transcriptDir}-keys.db` })).keys;
const server = ChatServer.listen({
  hostname: "127.0.0.1",
  port: 0,
  identity: await loadIdentity(`${pkiDir}/server.pem`, `${pkiDir}/server.key`),
  trust: await loadTrustStore(`${pkiDir}/ca.pem`),
  store: { ...sharedPasswordStore(BENCH_PASSWORD), keys },
  // Kept beside the transcripts (the bench shows its tail when a phase times out): a dropped
  // session or a refused record is otherwise invisible to a bench that only counts.
  log: createLogger(
    "text",
    (line) => Deno.writeTextFileSync(logFile, line + "\n", { append: true }),
  ),
  session: { transcripts: transcriptDirectory(transcriptDir) },
  admission: {
    maxConnections: 1_000_000,
    maxConnectionsPerAddress: 1_000_000,
    handshakeBurst: 1_000_000,
    handshakesPerSecond: 1_000_000,
  },
  // "each": every join told to every member at once, as an IRC server sends every JOIN (the
  // peer bench counts n(n-1)/2 join notices and compares that work with InspIRCd's);
  // "coalesced": as `serve` ships (the idle phase, which fills the lobby by thousands).
  lobby: {
    messagesPerSecond: 1e6,
    messageBurst: 1e6,
    presenceNoticeMs: presence === "coalesced" ? PRESENCE_NOTICE_WINDOW_MS : 0,
  },
});
reply({ port: server.port });

/**
 * Where the resident memory is: each V8 heap space's committed size, and from
 * /proc/self/smaps the resident kB of glibc's main-arena heap ([heap]) and of all other
 * anonymous mappings (V8's pages, other malloc arenas, thread stacks), so a slope per
 * connection can be split by owner.
 */
async function memoryMap(): Promise<Record<string, number>> {
  const map: Record<string, number> = {};
  for (const space of getHeapSpaceStatistics()) {
    if (space.physical_space_size > 0) map[`v8 ${space.space_name}`] = space.physical_space_size;
  }
  let mapping = "";
  for (const line of (await Deno.readTextFile("/proc/self/smaps")).split("\n")) {
    const head = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
    if (head) {
      mapping = head[1] === "[heap]" ? "native [heap]" : head[1] === "" ? "anonymous" : "";
      continue;
    }
    const rss = line.match(/^Rss:\s+(\d+) kB$/);
    if (rss && mapping) {
      map[`rss ${mapping}`] = (map[`rss ${mapping}`] ?? 0) + Number(rss[1]) * 1024;
    }
  }
  Object.assign(map, mallocStats());
  return map;
}

/**
 * glibc's own count over all its arenas (mallinfo2): bytes handed out and not freed, and
 * bytes free inside its heaps, which stay resident until trimmed. Read through FFI, so
 * only on glibc; elsewhere (or if libc.so.6 does not load) nothing is added.
 */
function mallocStats(): Record<string, number> {
  try {
    const libc = Deno.dlopen(
      "libc.so.6",
      {
        mallinfo2: { parameters: [], result: { struct: Array(10).fill("usize") } },
      } as const,
    );
    try {
      const raw = libc.symbols.mallinfo2() as Uint8Array;
      const [arena, , , , hblkhd, , , uordblks, fordblks] = Array.from(
        new BigUint64Array(raw.buffer, raw.byteOffset, 10),
        Number,
      );
      return {
        "malloc in use": uordblks + hblkhd,
        "malloc free in heaps": fordblks,
        "malloc heaps": arena,
      };
    } finally {
      libc.close();
    }
  } catch {
    return {};
  }
}

const gc = (globalThis as { gc?: () => void }).gc;
for await (const cmd of commands()) {
  if (cmd.cmd === "gc") {
    for (let i = 0; i < 3; i++) {
      gc?.();
      await sleep(50);
    }
    reply({ gc: gc !== undefined, memory: Deno.memoryUsage(), map: await memoryMap() });
  }
}
Deno.exit(0);
