/** `securechat serve`: run the chat server. */
import { Command, Option } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { createLogger, type LogFormat, type Logger } from "../lib/log.ts";
import { loadIdentity } from "../lib/identity.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { ChatServer } from "../lib/server/server.ts";
import { DEFAULT_LOGIN_THROTTLE } from "../lib/server/limits.ts";
import { OPERATOR_NAME } from "../lib/server/lobby.ts";
import { recipientUser } from "../lib/message/record.ts";
import { CHAT_HELP, parseChatLine } from "../lib/session/chat_line.ts";
import { openUserStore, resolveDatabase } from "../lib/store/open.ts";
import { type ClusterConfig, resolveClusterConfig } from "../lib/cluster/config.ts";
import { ClusterLink, redactUrl } from "../lib/cluster/link.ts";
import { serveHealth } from "../lib/server/health.ts";
import { info, positiveInt, subcommand } from "./_cli.ts";
import { readSecretFile } from "./connect.ts";
import { LineEditor, stdinLines } from "./_tty.ts";

interface ServeOptions {
  host: string;
  port: number;
  cert: string;
  key: string;
  keyPasswordFile?: string;
  ca: string;
  crl?: string;
  db?: string;
  transcripts: string;
  logFormat: LogFormat;
  console?: boolean;
  handshakeTimeout: number;
  idleTimeout: number;
  maxConnections: number;
  maxPerAddress: number;
  handshakeRate: number;
  sendQueue: number;
  messageRate: number;
  keyUpdate: number;
  loginDelay: number;
  loginLockout: number;
  cluster?: string[];
  node?: string;
  healthPort?: number;
  trustedProxy?: string[];
}

export function registerServe(program: Command): void {
  subcommand(program, "serve", "Run the chat server.")
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0: any free port)", portNumber, 65432)
    .option("--cert <file>", "server certificate", "certs/server.pem")
    .option("--key <file>", "server private key", "certs/server.key")
    .option("--key-password-file <file>", "password of an encrypted server key")
    .option("--ca <file>", "CA certificate that issued the users' certificates", "certs/ca.pem")
    .option("--crl <file>", "CRL of revoked certificates (default: ca.crl beside --ca, if present)")
    .option(
      "--db <url>",
      "sqlite:PATH or mysql://user:pass@host:port/db (default: .env DB_*, else sqlite:data/securechat.db)",
    )
    .option("--transcripts <dir>", "where to write transcripts and receipts", "transcripts")
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
      portNumber,
    )
    .addOption(
      new Option("--log-format <format>", "log line format").choices(["text", "json"]).default(
        "text",
      ),
    )
    .option("--console", "read operator chat lines from stdin even when it is not a terminal")
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
      "connections per client address",
      positiveInt("--max-per-address"),
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
      "failed logins per user or address before refusing for 15 minutes",
      positiveInt("--login-lockout"),
      20,
    )
    .addHelpText(
      "after",
      `
Logs one line per event to stdout (LISTEN, CONNECT, LOGIN, CLOSE and every
rejection code: BAD_CERT, SIG_FAIL, REPLAY, STALE, DECRYPT_FAIL, AUTH_FAIL,
PROTOCOL_ERROR, TIMEOUT, ...). SIGINT/SIGTERM close every session with receipts.
The operator speaks as "${OPERATOR_NAME}" from a terminal (or with --console):
${CHAT_HELP.replace(/^/gm, "  ")}

Several nodes behind a load balancer share one MariaDB and one NATS with
JetStream (docs/DEPLOY.md, deploy/haproxy.cfg).

Examples:
  securechat serve --port 65432 --db sqlite:data/securechat.db
  securechat serve --cluster nats://10.0.0.9:4222 --node n1 --health-port 8081 \
    --db mysql://chat:secret@10.0.0.8:3306/secure_chat`,
    )
    .action((options: ServeOptions) => serve(options));
}

/** An IP address as Deno reports a peer's (`--trusted-proxy` is compared with it). */
function ipAddress(value: string): string {
  if (/^(\d{1,3}\.){3}\d{1,3}$/.test(value) || /^[0-9a-fA-F:]+$/.test(value)) return value;
  throw new SecureChatError("USAGE", `--trusted-proxy takes an IP address, not "${value}"`);
}

function portNumber(value: string): number {
  return value === "0" ? 0 : positiveInt("--port", 65535)(value);
}

async function serve(options: ServeOptions): Promise<void> {
  const interactive = Deno.stdin.isTerminal();
  // On a terminal the operator types while events arrive: log lines go above the prompt.
  const editor = interactive ? new LineEditor(`${OPERATOR_NAME}> `) : undefined;
  const log = createLogger(
    options.logFormat,
    editor ? (line) => editor.print(line) : (line) => console.log(line),
  );
  const identity = await loadIdentity(
    options.cert,
    options.key,
    options.keyPasswordFile ? await readSecretFile(options.keyPasswordFile) : undefined,
  );
  const trust = await TrustStore.load(options.ca, options.crl);
  const clusterConfig = clusterConfigOf(options);
  const store = await openUserStore({
    url: options.db,
    // Start anyway: logins fail DB_UNAVAILABLE until the database is back (issue #4).
    onUnavailableAtOpen: (error) => log("DB_UNAVAILABLE", { detail: error.message }),
  }).catch((error) => {
    // A malformed --db or DB_* set is the user's to fix: a usage error.
    if (codeOf(error) !== "INVALID_INPUT") throw error;
    throw new SecureChatError("USAGE", (error as Error).message, { cause: error });
  });
  const cluster = clusterConfig ? await joinCluster(clusterConfig, log) : undefined;
  const server = ChatServer.listen({
    cluster,
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
      transcriptDir: options.transcripts,
      idleTimeoutMs: options.idleTimeout * 1000,
      keyUpdateMs: options.keyUpdate * 1000,
    },
    admission: {
      maxConnections: options.maxConnections,
      maxConnectionsPerAddress: options.maxPerAddress,
      handshakesPerSecond: options.handshakeRate,
      handshakeBurst: options.handshakeRate * 2,
    },
    lobby: { messagesPerSecond: options.messageRate, messageBurst: options.messageRate * 2 },
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

  const signalled = new Promise<void>((resolve) => {
    const stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
  const operator = editor || options.console ? operatorConsole(server, editor) : undefined;
  // On a terminal the editor reads Ctrl-C and Ctrl-D itself (raw mode): they end the
  // console, and that stops the server as the signal would.
  await Promise.race(editor && operator ? [signalled, operator] : [signalled]);
  editor?.stop();
  info("shutting down: closing sessions with receipts");
  await health?.close();
  await server.shutdown();
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
    engine = resolveDatabase({ url: options.db }).engine;
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

async function operatorConsole(server: ChatServer, editor?: LineEditor): Promise<void> {
  const say = (text: string) => editor ? editor.print(text) : info(text);
  for await (const line of editor ? editor.lines() : stdinLines()) {
    const parsed = parseChatLine(line);
    if (parsed.action === "help") say(CHAT_HELP);
    if (parsed.action === "error") say(parsed.message);
    if (parsed.action !== "send") continue;
    const { body, to } = parsed;
    if (body.kind === "who") say(`online: ${server.lobby.names().join(", ") || "nobody"}`);
    if (body.kind === "text") server.lobby.operatorSays(body.text, recipientUser(to) ?? undefined);
  }
}
