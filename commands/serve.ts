/** `securechat serve`: run the chat server. */
import { fileURLToPath } from "node:url";
import { loadTrustStore } from "../lib/pki/trust_files.ts";
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { join } from "node:path";
import { Command, Option } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { createLogger, type LogFormat, type Logger } from "../lib/log.ts";
import { loadIdentity } from "../lib/identity.ts";
import { rsaSignerOf, type SigningKey } from "../lib/crypto/signature.ts";
import { symmetricBackend } from "../lib/crypto/sync_node.ts";
import { defaultCrlPath } from "../lib/pki/validate.ts";
import { ChatServer } from "../lib/server/server.ts";
import { DEFAULT_LOGIN_THROTTLE } from "../lib/server/limits.ts";
import { OPERATOR_NAME } from "../lib/server/lobby.ts";
import { recipientUser } from "../lib/message/record.ts";
import { CHAT_HELP, parseChatLine } from "../lib/session/chat_line.ts";
import { openUserStore, resolveDatabase } from "../lib/store/open.ts";
import { DEFAULT_QUEUE_LIMITS, MAX_QUEUE_AGE_MS } from "../lib/store/message_queue.ts";
import { type ClusterConfig, resolveClusterConfig } from "../lib/cluster/config.ts";
import { ClusterLink, redactUrl } from "../lib/cluster/link.ts";
import { serveHealth } from "../lib/server/health.ts";
import { loadWebAssets, serveWeb, type WebAsset } from "../lib/server/web.ts";
import { databaseOf, loadSettings, type Settings } from "./_home.ts";
import { memoryTicketStores, TicketAuthority } from "../lib/resumption/ticket.ts";
import { info, positiveInt, privateDir, subcommand } from "./_cli.ts";
import { readPasswordFile } from "./_password.ts";
import { LineEditor, stdinLines } from "./_tty.ts";
import { layoutLine, type Screen, screenOf } from "./_screen.ts";
import { safeText } from "../lib/safe_text.ts";
import { isValidUserName } from "../lib/pki/names.ts";
import { releaseEarlyHangups } from "./_early_hangups.ts";

interface ServeFlags {
  host?: string;
  port?: number;
  dir?: string;
  cert?: string;
  key?: string;
  keyPasswordFile?: string;
  ca?: string;
  crl?: string;
  db?: string;
  transcripts?: string;
  logFormat: LogFormat;
  console?: boolean;
  handshakeTimeout: number;
  idleTimeout: number;
  maxConnections: number;
  maxPerAddress: number;
  maxPending: number;
  cookieThreshold: number;
  handshakeRate: number;
  sendQueue: number;
  messageRate: number;
  keyUpdate: number;
  loginDelay: number;
  loginLockout: number;
  queueMax: number;
  queueAge?: number;
  cluster?: string[];
  node?: string;
  healthPort?: number;
  web?: number;
  webRoot?: string;
  trustedProxy?: string[];
  keylog?: string;
  allowBuiltinRsa?: boolean;
}

/** The flags with the config file and the home filled in: what `serve` runs with. */
interface ServeOptions extends ServeFlags {
  host: string;
  port: number;
  cert: string;
  key: string;
  ca: string;
  transcripts: string;
  /** The user store: --db, else the config file's, else DB_*, else the home's SQLite file. */
  database: { url?: string; defaultUrl: string };
}

/** Flag, else config file, else built-in default (issue 17 item 1). */
export function serveOptions(flags: ServeFlags, settings: Settings): ServeOptions {
  const config = settings.config.serve ?? {};
  const dir = flags.dir ?? settings.certs;
  return {
    ...flags,
    host: flags.host ?? config.host ?? "127.0.0.1",
    port: flags.port ?? config.port ?? 65432,
    cert: flags.cert ?? join(dir, "server.pem"),
    key: flags.key ?? join(dir, "server.key"),
    ca: flags.ca ?? join(dir, "ca.pem"),
    transcripts: flags.transcripts ?? settings.transcripts,
    database: databaseOf(flags.db, settings),
  };
}

export function registerServe(program: Command): void {
  subcommand(program, "serve", "Run the chat server.")
    .option("--host <host>", "address to listen on (default 127.0.0.1)")
    .option(
      "--port <port>",
      "port to listen on, 0 for any free port (default 65432)",
      portNumber("--port"),
    )
    .option("--dir <dir>", "PKI directory with ca.pem and server.pem/.key (default: the home's)")
    .option("--cert <file>", "server certificate (default <dir>/server.pem)")
    .option("--key <file>", "server private key (default <dir>/server.key)")
    .option("--key-password-file <file>", "password of an encrypted server key")
    .option(
      "--ca <file>",
      "CA certificate that issued the users' certificates (default <dir>/ca.pem)",
    )
    .option(
      "--crl <file>",
      "CRL of revoked certificates, re-read when it changes (default: ca.crl beside --ca)",
    )
    .option(
      "--db <url>",
      "sqlite:PATH or mysql://user:pass@host:port/db (default: .env DB_*, else securechat.db in the home)",
    )
    .option("--transcripts <dir>", "where to write transcripts and receipts (default: the home's)")
    .option(
      "--cluster <url>",
      "join a cluster through NATS (nats://host:4222; repeat for each NATS server; needs --node and a mysql:// --db; default .env SECURECHAT_CLUSTER)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option(
      "--node <name>",
      "this node's name, unique in the cluster (default .env SECURECHAT_NODE)",
    )
    .option(
      "--trusted-proxy <address>",
      "a load balancer's address whose connections start with a PROXY protocol v2 header (repeatable)",
      (value: string, previous: string[] = []) => [...previous, ipAddress(value)],
    )
    .option(
      "--health-port <port>",
      "answer GET /health on this port for a load balancer (200 ok, 503 unavailable)",
      portNumber("--health-port"),
    )
    .option(
      "--web <port>",
      "also take the protocol over WebSocket at ws://HOST:PORT/ws, one binary message per frame (0 for any free port), and serve the browser page at http://HOST:PORT/",
      portNumber("--web"),
    )
    .option(
      "--web-root <dir>",
      "the built page for --web (default: web/dist of this checkout, from `deno task web:build`)",
    )
    .addOption(
      new Option("--log-format <format>", "log line format").choices(["text", "json"]).default(
        "text",
      ),
    )
    .option("--console", "read operator chat lines from stdin even when it is not a terminal")
    .option(
      "--keylog <file>",
      "AUDITORS ONLY: append every session's transport secrets to FILE (PROTOCOL §12.9)",
    )
    .option(
      "--allow-builtin-rsa",
      "start with an RSA key even where OpenSSL's libcrypto cannot sign with it: Deno's " +
        "built-in RSA is ~5x slower and leaks timing (RUSTSEC-2023-0071; docs/DEPLOY.md §1)",
    )
    .option(
      "--handshake-timeout <ms>",
      "drop a client that has not finished its handshake",
      positiveInt("--handshake-timeout"),
      10000,
    )
    .option(
      "--idle-timeout <s>",
      "close a session idle this long",
      positiveInt("--idle-timeout"),
      1800,
    )
    .option("--max-connections <n>", "connections in total", positiveInt("--max-connections"), 2048)
    .option(
      "--max-per-address <n>",
      "connections per client address still in their handshake",
      positiveInt("--max-per-address"),
      64,
    )
    .option(
      "--max-pending <n>",
      "connections in their handshake at once; the rest are kept for sessions",
      positiveInt("--max-pending"),
      512,
    )
    .option(
      "--cookie-threshold <n>",
      "handshakes in progress from which a hello must echo a cookie (0: always)",
      (value: string) => value === "0" ? 0 : positiveInt("--cookie-threshold")(value),
      64,
    )
    .option(
      "--handshake-rate <n>",
      "handshakes per second per address (burst 2x)",
      positiveInt("--handshake-rate"),
      10,
    )
    .option(
      "--send-queue <bytes>",
      "bytes queued to a client that stopped reading before it is dropped",
      positiveInt("--send-queue"),
      1048576,
    )
    .option(
      "--message-rate <n>",
      "chat messages per second per user (burst 2x)",
      positiveInt("--message-rate"),
      20,
    )
    .option(
      "--key-update <s>",
      "update each chat key after this many seconds (PROTOCOL §4.4)",
      positiveInt("--key-update"),
      3600,
    )
    .option(
      "--login-delay <ms>",
      "delay after a failed login, doubled per failure (up to 8 s)",
      positiveInt("--login-delay"),
      250,
    )
    .option(
      "--login-lockout <n>",
      "failed logins per certificate, and per account, before refusing for 15 minutes",
      positiveInt("--login-lockout"),
      20,
    )
    .option(
      "--queue-max <n>",
      "private messages kept per offline user until their next login (PROTOCOL §6.6)",
      positiveInt("--queue-max"),
      DEFAULT_QUEUE_LIMITS.maxRecords,
    )
    .option(
      "--queue-age <duration>",
      "how long a message waits for an offline user before it is dropped unread: " +
        "a number with s, m, h or d, at most 30d (default 30d)",
      queueAge,
    )
    .addHelpText(
      "after",
      `
Logs one line per event to stdout (LISTEN, CONNECT, LOGIN, CLOSE and every
rejection code: BAD_CERT, SIG_FAIL, REPLAY, STALE, DECRYPT_FAIL, AUTH_FAIL,
PROTOCOL_ERROR, TIMEOUT, ...). SIGINT/SIGTERM close every session with receipts.
The CRL is re-read when its file changes (checked every 5 s) and on SIGHUP; the
live sessions of newly revoked certificates end with REVOKED.
The operator speaks as "${OPERATOR_NAME}" from a terminal (or with --console):
${OPERATOR_HELP.replace(/^/gm, "  ")}

Several nodes behind a load balancer share one MariaDB and one NATS with
JetStream (docs/DEPLOY.md, deploy/haproxy.cfg).

Examples:
  securechat serve --port 65432 --db sqlite:data/securechat.db
  securechat serve --cluster nats://10.0.0.9:4222 --node n1 --health-port 8081 \
    --db mysql://chat:secret@10.0.0.8:3306/secure_chat`,
    )
    .action(async (flags: ServeFlags) => await serve(serveOptions(flags, await loadSettings())));
}

/**
 * A log line on the operator's terminal: its time and event word are the head, the
 * fields (already quoted by the logger) wrap under it, so a long field cannot begin a
 * row that looks like another event (issue 11 item 1).
 */
function layoutLogLine(screen: Screen, line: string): string {
  const cut = line.indexOf(" ", line.indexOf(" ") + 1);
  return cut < 0
    ? layoutLine(screen, line, "")
    : layoutLine(screen, line.slice(0, cut), line.slice(cut + 1));
}

/**
 * The server signs for every peer that opens a handshake, before any authentication: with
 * Deno's built-in RSA (RUSTSEC-2023-0071, not constant time) that hands anyone who can connect
 * and time the answers a measurement of the private key. So an RSA server key signs through
 * OpenSSL's libcrypto, or serve refuses to start unless the operator accepts the built-in one
 * with --allow-builtin-rsa (a test bed, a platform without OpenSSL 3). Logged once either way.
 * @throws {SecureChatError} UNSUPPORTED for an RSA key libcrypto cannot sign with, unless allowed
 */
function checkRsaSigner(key: SigningKey, allowBuiltin: boolean, log: Logger): void {
  const signer = rsaSignerOf(key);
  if (!signer) return;
  if (!signer.native && !allowBuiltin) {
    throw new SecureChatError("UNSUPPORTED", `RSA signing would use ${signer.detail}`, {
      hint: "install OpenSSL 3's library (Debian, Ubuntu: libssl3) and run with the start " +
        "task's --allow-ffi; or use an Ed25519 or ECDSA server key; or pass --allow-builtin-rsa " +
        "to sign with Deno's own RSA anyway, ~5x slower and leaking the key's timing to anyone " +
        "who can connect (docs/DEPLOY.md §1)",
    });
  }
  log("RSA_SIGNER", { detail: signer.native ? signer.detail : `WARNING: ${signer.detail}` });
}

/**
 * `--keylog FILE`, as SSLKEYLOGFILE is for TLS: whoever reads FILE can decrypt every session
 * frame recorded on the wire, so it is off unless asked for, said loudly, and owner-only.
 * End-to-end records stay ciphertext even then (PROTOCOL §12.9): that is what it lets an
 * auditor check.
 */
async function openKeylog(path: string): Promise<(line: string) => void> {
  const file = await Deno.open(path, { append: true, create: true, mode: 0o600 }).catch(
    (cause) => {
      throw new SecureChatError("IO_ERROR", `cannot open the key log ${path}`, { cause });
    },
  );
  console.error(
    `securechat: WARNING: --keylog is on: every session's transport secrets are written to ` +
      `${path}; anyone who reads it can decrypt those sessions' frames (not the end-to-end ` +
      `messages inside). Use it only to audit, and delete the file after.`,
  );
  const encoder = new TextEncoder();
  return (line) => {
    const data = encoder.encode(line + "\n");
    for (let off = 0; off < data.length;) off += file.writeSync(data.subarray(off));
  };
}

/** An IP address as Deno reports a peer's (`--trusted-proxy` is compared with it). */
function ipAddress(value: string): string {
  if (/^(\d{1,3}\.){3}\d{1,3}$/.test(value) || /^[0-9a-fA-F:]+$/.test(value)) return value;
  throw new SecureChatError("USAGE", `--trusted-proxy takes an IP address, not "${value}"`);
}

const DURATION_UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** `--queue-age`: `90s`, `15m`, `12h`, `30d`, in ms; at most the protocol's 30 days. */
export function queueAge(value: string): number {
  const match = /^([0-9]{1,7})([smhd])$/.exec(value);
  const ms = match ? Number(match[1]) * DURATION_UNIT_MS[match[2]] : NaN;
  if (!(ms >= 1000 && ms <= MAX_QUEUE_AGE_MS)) {
    throw new SecureChatError(
      "USAGE",
      `--queue-age must be a duration from 1s to 30d, like 12h or 7d, not "${value}"`,
    );
  }
  return ms;
}

/** A port to listen on: 0 asks the system for any free one. */
function portNumber(flag: string): (value: string) => number {
  return (value) => {
    if (value === "0") return 0;
    try {
      return positiveInt(flag, 65535)(value);
    } catch {
      throw new SecureChatError(
        "USAGE",
        `${flag} must be an integer from 0 (any free port) to 65535, not "${value}"`,
      );
    }
  };
}

/**
 * SIGHUP asks for a CRL reload now (issue 11 item 2), and its default action ends the process:
 * so serve takes it from its first line to its last. One that comes while the server starts
 * is honoured once it is up (the CRL may have changed since it was read); one during the
 * shutdown is moot, and must not cut the sessions' close with receipts short.
 */
class HangupReloads {
  #server?: ChatServer;
  #pending = false;
  #stopping = false;
  readonly #onHangup = () => {
    if (this.#stopping) return;
    if (this.#server) void this.#server.reloadCrl();
    else this.#pending = true;
  };

  constructor() {
    Deno.addSignalListener("SIGHUP", this.#onHangup);
    // main.ts took SIGHUP before the program loaded: one that came then is honoured too.
    if (releaseEarlyHangups()) this.#pending = true;
  }

  running(server: ChatServer): void {
    this.#server = server;
    if (this.#pending) void server.reloadCrl();
  }

  stopping(): void {
    this.#stopping = true;
  }

  /** Restores SIGHUP's default once serve is done. */
  remove(): void {
    Deno.removeSignalListener("SIGHUP", this.#onHangup);
  }
}

async function serve(options: ServeOptions): Promise<void> {
  // First of all: a reload signal sent while the server starts is no crash.
  const hangups = new HangupReloads();
  try {
    await runServer(options, hangups);
  } finally {
    hangups.remove();
  }
}

async function runServer(options: ServeOptions, hangups: HangupReloads): Promise<void> {
  const interactive = Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  // On a terminal the operator types while events arrive: log lines go above the prompt.
  const editor = interactive ? new LineEditor(`${OPERATOR_NAME}> `) : undefined;
  const screen = screenOf();
  const log = createLogger(
    options.logFormat,
    editor ? (line) => editor.print(layoutLogLine(screen, line)) : (line) => console.log(line),
  );
  const identity = await loadIdentity(
    options.cert,
    options.key,
    options.keyPasswordFile ? await readPasswordFile(options.keyPasswordFile) : undefined,
  );
  checkRsaSigner(identity.signingKey, options.allowBuiltinRsa === true, log);
  // Which library seals records and hashes: an operator cannot see it otherwise (DEPLOY.md §1).
  log("SYMMETRIC_CRYPTO", { detail: symmetricBackend().detail });
  const trust = await loadTrustStore(options.ca, options.crl);
  const clusterConfig = clusterConfigOf(options);
  // An existing transcripts directory is tightened (or serve refuses) now; one that does not
  // exist yet is made 0700 with the first session, which reports TRANSCRIPT_IO if it cannot.
  if (await Deno.stat(options.transcripts).then(() => true, () => false)) {
    await privateDir(options.transcripts);
  }
  const store = await openUserStore({
    ...options.database,
    // Start anyway: logins fail DB_UNAVAILABLE until the database is back (issue #4).
    onUnavailableAtOpen: (error) => log("DB_UNAVAILABLE", { detail: error.message }),
  }).catch((error) => {
    // A malformed --db or DB_* set is the user's to fix: a usage error.
    if (codeOf(error) !== "INVALID_INPUT") throw error;
    throw new SecureChatError("USAGE", (error as Error).message, { cause: error });
  });
  const cluster = clusterConfig ? await joinCluster(clusterConfig, log) : undefined;
  // One node keeps its ticket keys in memory; a cluster's nodes share them through NATS.
  const tickets = new TicketAuthority(
    cluster ? await cluster.ticketStores() : memoryTicketStores(),
  );
  const keylog = options.keylog === undefined ? undefined : await openKeylog(options.keylog);
  const server = ChatServer.listen({
    keylog,
    cluster,
    tickets,
    trustedProxies: options.trustedProxy,
    hostname: options.host,
    port: options.port,
    identity,
    trust,
    store,
    log,
    handshakeTimeoutMs: options.handshakeTimeout,
    sendQueueBytes: options.sendQueue,
    session: {
      transcripts: transcriptDirectory(options.transcripts),
      idleTimeoutMs: options.idleTimeout * 1000,
      keyUpdateMs: options.keyUpdate * 1000,
    },
    admission: {
      maxConnections: options.maxConnections,
      maxConnectionsPerAddress: options.maxPerAddress,
      maxPending: Math.min(options.maxPending, options.maxConnections),
      cookieThreshold: options.cookieThreshold,
      handshakesPerSecond: options.handshakeRate,
      handshakeBurst: options.handshakeRate * 2,
    },
    lobby: { messagesPerSecond: options.messageRate, messageBurst: options.messageRate * 2 },
    queue: { maxRecords: options.queueMax, maxAgeMs: options.queueAge ?? MAX_QUEUE_AGE_MS },
    revocation: { crlPath: options.crl ?? defaultCrlPath(options.ca) },
    loginThrottle: {
      ...DEFAULT_LOGIN_THROTTLE,
      baseDelayMs: options.loginDelay,
      lockoutFailures: options.loginLockout,
    },
  });

  await server.startCluster();
  const health = options.healthPort === undefined
    ? undefined
    : serveHealth(options.host, options.healthPort, () => server.healthy);
  if (health) log("HEALTH", { detail: `${options.host}:${health.port}` });
  const web = options.web === undefined ? undefined : await serveWeb(
    options.host,
    options.web,
    server,
    log,
    await webPage(options.webRoot, log),
    () => trust.crl?.der,
  );
  if (web) log("LISTEN_WEB", { detail: `${options.host}:${web.port}` });

  const signalled = new Promise<void>((resolve) => {
    const stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
  hangups.running(server);
  const operator = editor || options.console ? operatorConsole(server, editor) : undefined;
  // `/quit` stops the server as the signal would; so do Ctrl-C and Ctrl-D on a terminal
  // (the editor reads them itself). The end of a piped --console input does not.
  const quit = operator?.then((why) =>
    editor || why === "quit" ? undefined : new Promise(() => {})
  );
  await Promise.race(quit ? [signalled, quit] : [signalled]);
  editor?.stop();
  hangups.stopping();
  info("shutting down: closing sessions with receipts");
  await health?.close();
  await server.shutdown();
  await web?.close();
  await store.close();
}

/**
 * The cluster this node joins, if any. Every node must see the same accounts, so a cluster
 * on SQLite (one node's file) is refused before anything starts.
 * @throws USAGE
 */
function clusterConfigOf(options: ServeOptions): ClusterConfig | undefined {
  const config = resolveClusterConfig({ cluster: options.cluster, node: options.node });
  if (!config) return undefined;
  let engine: string;
  try {
    engine = resolveDatabase(options.database).engine;
  } catch (error) {
    throw new SecureChatError("USAGE", (error as Error).message, { cause: error });
  }
  if (engine !== "mysql") {
    throw new SecureChatError(
      "USAGE",
      "--cluster needs a database every node shares: SQLite is one node's file",
      { hint: "pass --db mysql://user:pass@host:3306/db (MariaDB), or set DB_HOST and friends" },
    );
  }
  return config;
}

async function joinCluster(config: ClusterConfig, log: Logger): Promise<ClusterLink> {
  const link = await ClusterLink.connect({ ...config, log });
  log("CLUSTER", {
    detail: `node ${config.node} on ${config.servers.map(redactUrl).join(", ")}`,
  });
  return link;
}

/** The operator's commands: the chat's, plus /kick, and a /who that says where and since when. */
const OPERATOR_HELP = CHAT_HELP.replace(
  "/passwd             change your password (the old one, then the new one twice)\n",
  "",
).replace(
  "/who                list who is online",
  "/who                who is online, from which address, since when\n" +
    "/kick <user>        close a user's session (receipts are exchanged)\n" +
    "/unlock <user|addr> end a lockout after too many failed logins",
).replace(
  "end the session (receipts are exchanged)",
  "stop the server (sessions close with receipts)",
);

function since(ms: number): string {
  const minutes = Math.floor((Date.now() - ms) / 60_000);
  const ago = minutes < 1
    ? "just now"
    : minutes < 120
    ? `${minutes} min`
    : `${Math.floor(minutes / 60)} h`;
  return `since ${new Date(ms).toTimeString().slice(0, 8)} (${ago})`;
}

/** Reads operator lines until /quit ("quit") or the end of input ("eof"). */
async function operatorConsole(server: ChatServer, editor?: LineEditor): Promise<"quit" | "eof"> {
  const say = (text: string) => {
    for (const line of text.split("\n")) editor ? editor.print(safeText(line)) : info(line);
  };
  for await (const line of editor ? editor.lines() : stdinLines()) {
    const unlock = /^\/unlock(?:\s+(\S+))?\s*$/.exec(line.trim());
    if (unlock) {
      if (!unlock[1]) say("usage: /unlock <user|address>");
      else {
        // A user name has no ':' or only letters, digits, '_', '.', '-'; anything else is an address.
        const address = isValidUserName(unlock[1]) && !/^[0-9.]+$/.test(unlock[1])
          ? undefined
          : unlock[1];
        try {
          const cleared = await server.unlock(address ? { address } : { user: unlock[1] });
          say(
            cleared === 0
              ? `${unlock[1]} had no failed logins to forgive`
              : `failed logins of ${unlock[1]} forgiven: its lockout is over`,
          );
        } catch (error) {
          say(`cannot unlock ${unlock[1]}: ${codeOf(error)} (${(error as Error).message})`);
        }
      }
      continue;
    }
    const kick = /^\/kick(?:\s+(\S+))?\s*$/.exec(line.trim());
    if (kick) {
      if (!kick[1]) say("usage: /kick <user>");
      else if (!await server.lobby.kick(kick[1])) say(`${kick[1]} is not online`);
      else say(`closed ${kick[1]}'s session`);
      continue;
    }
    const parsed = parseChatLine(line);
    if (parsed.action === "quit") return "quit";
    if (parsed.action === "help") say(OPERATOR_HELP);
    if (parsed.action === "passwd") say("users' passwords: `securechat user passwd NAME`");
    if (parsed.action === "error") say(parsed.message);
    if (parsed.action !== "send") continue;
    const { body, to } = parsed;
    if (body.kind === "who") {
      const members = server.lobby.members();
      say(members.length === 0 ? "online: nobody" : `online: ${members.length}`);
      for (const m of members) say(`  ${m.username}  ${m.peer}  ${since(m.since)}`);
    }
    const user = recipientUser(to) ?? undefined;
    if (body.kind === "text" && !await server.lobby.operatorSays(body.text, user)) {
      say(`${user} is not online: not sent`);
    }
  }
  return "eof";
}

/**
 * The page `--web` serves: --web-root's (which must hold one), or this checkout's if built.
 * A `deno task compile` binary carries its checkout's web/dist inside (`--include`), at the
 * same place beside this module, so it serves the page it was built with and needs no
 * --web-root.
 */
async function webPage(
  webRoot: string | undefined,
  log: Logger,
): Promise<Map<string, WebAsset> | undefined> {
  if (webRoot !== undefined) return await loadWebAssets(webRoot);
  const checkout = fileURLToPath(new URL("../web/dist", import.meta.url));
  try {
    return await loadWebAssets(checkout);
  } catch {
    log("WEB_NO_PAGE", {
      detail: `${checkout} holds no built page: only /ws is served (deno task web:build)`,
    });
    return undefined;
  }
}
