/** `securechat connect`: log in (or register) and chat from the terminal or a script. */
import { Command, Option } from "commander";
import { SecureChatError } from "../lib/errors.ts";
import { clientHandshake, type Credentials } from "../lib/handshake/client.ts";
import { loadIdentity } from "../lib/identity.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { CHAT_HELP, parseChatLine } from "../lib/session/chat_line.ts";
import { ChatSession, type ReceivedMessage } from "../lib/session/session.ts";
import { SeenStore } from "../lib/session/relay.ts";
import { DEFAULT_MAX_SKEW_MS } from "../lib/handshake/common.ts";
import { canonicalName, recipientUser } from "../lib/message/record.ts";
import { join } from "node:path";
import { FrameConnection } from "../lib/wire/connection.ts";
import { OPERATOR_NAME } from "../lib/server/lobby.ts";
import { info, positiveInt, subcommand } from "./_cli.ts";
import { LineEditor, promptHidden, stdinLines } from "./_tty.ts";
import { type History, openHistory } from "./_history.ts";

interface ConnectOptions {
  user: string;
  register?: boolean;
  email?: string;
  host: string;
  port: number;
  serverName: string;
  cert?: string;
  key?: string;
  ca: string;
  crl?: string;
  transcripts: string;
  passwordFile?: string;
  keyPasswordFile?: string;
  history?: string;
  handshakeTimeout: number;
  keyUpdate: number;
}

export function registerConnect(program: Command): void {
  subcommand(program, "connect", "Log in to a server and chat.")
    .requiredOption("-u, --user <name>", "your user name (the CN of your certificate)")
    .option("--register", "create the account first (asks for an e-mail address with --email)")
    .option("--email <address>", "e-mail address for --register")
    .option("--host <host>", "server address", "127.0.0.1")
    .option("--port <port>", "server port", positiveInt("--port", 65535), 65432)
    .option("--server-name <name>", "name the server certificate must carry", "localhost")
    .option("--cert <file>", "your certificate (default certs/<user>.pem)")
    .option("--key <file>", "your private key (default certs/<user>.key)")
    .option("--ca <file>", "CA certificate to trust", "certs/ca.pem")
    .option("--crl <file>", "CRL to check the server against (default: ca.crl beside --ca)")
    .option("--transcripts <dir>", "where to write the transcript and receipts", "transcripts")
    .option(
      "--password-file <file>",
      "read the password from a file (else prompt or $SECURECHAT_PASSWORD)",
    )
    .option("--key-password-file <file>", "password of an encrypted private key")
    .option(
      "--key-update <s>",
      "update our chat key after this many seconds (PROTOCOL §4.4)",
      positiveInt("--key-update"),
      3600,
    )
    .option("--history <file>", "also keep a local PLAINTEXT log of the chat (off by default)")
    .addOption(
      new Option("--handshake-timeout <ms>", "give up on a handshake after this long")
        .argParser(positiveInt("--handshake-timeout")).default(10000),
    )
    .addHelpText(
      "after",
      `
Password: from a hidden prompt on a terminal; otherwise from --password-file or
the SECURECHAT_PASSWORD environment variable (never from a flag).
Without a terminal each input line is one message and end of input closes the
session cleanly (receipts exchanged). In the chat:
${CHAT_HELP.replace(/^/gm, "  ")}

Examples:
  securechat connect --user alice --register --email alice@example.com
  echo "hello" | SECURECHAT_PASSWORD=... securechat connect --user alice`,
    )
    .action((options: ConnectOptions) => connect(options));
}

async function connect(options: ConnectOptions): Promise<void> {
  const interactive = Deno.stdin.isTerminal();
  const identity = await loadIdentity(
    options.cert ?? `certs/${options.user}.pem`,
    options.key ?? `certs/${options.user}.key`,
    options.keyPasswordFile ? await readSecretFile(options.keyPasswordFile) : undefined,
  );
  const trust = await TrustStore.load(options.ca, options.crl);
  const credentials = await credentialsFor(options, interactive);
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: options.host, port: options.port });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot connect to ${options.host}:${options.port}`, {
      cause,
      hint: "is `securechat serve` running there?",
    });
  }
  tcp.setNoDelay(true); // see lib/server/server.ts: small frames, answered at once
  const established = await clientHandshake(new FrameConnection(tcp), {
    identity,
    trust,
    serverName: options.serverName,
    credentials,
    timeoutMs: options.handshakeTimeout,
  });
  // Relay high-water marks outlive the session (PROTOCOL §6.4).
  const seen = await SeenStore.load(
    join(options.transcripts, `${canonicalName(options.user)}.seen.json`),
    2 * DEFAULT_MAX_SKEW_MS,
  );
  const session = await ChatSession.start(established, {
    transcriptDir: options.transcripts,
    serverName: options.serverName,
    relayTrust: trust,
    seen,
    keepKeys: true,
    keyUpdateMs: options.keyUpdate * 1000,
  });
  const history = options.history ? await openHistory(options.history) : undefined;
  info(
    `${
      credentials.mode === "register" ? "registered and logged in" : "logged in"
    } as ${session.username} ` +
      `to ${established.peer.commonName}; session ${session.sessionId}`,
  );

  const editor = interactive ? new LineEditor(`${session.username}> `) : undefined;
  const show = (line: string) => editor ? editor.print(line) : console.log(line);
  const running = session.run({
    onMessage: (message) => {
      if (message.type === "refused") {
        info(`message ${message.of} refused by the server: ${message.code}`);
        return;
      }
      const line = formatIncoming(message);
      if (line) show(line);
      const shown = describe(message);
      if (shown) history?.record(message.ts, shown.author, shown.text, shown.to);
    },
  });
  const onSignal = () => void session.close().catch(() => {});
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    await Promise.race([chatInput(session, editor, show, history), running]);
    editor?.stop();
    await session.close().catch(() => {});
    const end = await running;
    await seen.save();
    await history?.close();
    info(`transcript: ${end.transcriptPath}`);
    if (end.receiptPath) info(`receipt: ${end.receiptPath}`);
    if (end.peerReceiptPath) info(`server's receipt: ${end.peerReceiptPath}`);
    if (end.outcome !== "closed") {
      throw new SecureChatError(
        (end.code as never) ?? "PROTOCOL_ERROR",
        end.outcome === "peer_gone"
          ? "the server closed the connection without receipts"
          : end.message ?? "session failed",
      );
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
  }
}

/**
 * Lines piped in are sent with up to this many in flight: each is numbered at once and
 * signed while earlier ones travel, so a script is not held to one signature at a time.
 */
const SENDS_IN_FLIGHT = 32;

async function chatInput(
  session: ChatSession,
  editor: LineEditor | undefined,
  show: (line: string) => void,
  history: History | undefined,
): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  for await (const line of editor ? editor.lines() : stdinLines()) {
    if (session.closing || failure !== undefined) break;
    const parsed = parseChatLine(line);
    if (parsed.action === "quit") break;
    if (parsed.action === "help") show(CHAT_HELP);
    if (parsed.action === "error") show(`securechat: ${parsed.message}`);
    if (parsed.action !== "send") continue;
    const { body, to } = parsed;
    const sending: Promise<void> = session.send(body, to).then(
      () => {
        const privateTo = recipientUser(to) ?? undefined;
        if (body.kind === "text") history?.record(Date.now(), session.username, body.text, privateTo);
      },
      (error) => {
        failure ??= error;
      },
    ).finally(() => inFlight.delete(sending));
    inFlight.add(sending);
    while (inFlight.size >= SENDS_IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  // A send failing because the session ended under us is not the error: run() says why.
  if (failure !== undefined && !session.closing) throw failure;
}

/** Who wrote an incoming message and what it says; null for messages not meant for display. */
function describe(message: ReceivedMessage): { author: string; text: string; to?: string } | null {
  if (message.type === "relay") {
    const { relayed } = message;
    return { author: relayed.author, text: relayed.text, to: relayed.private ? "you" : undefined };
  }
  if (message.type !== "msg") return null;
  const { body } = message;
  if (body.kind === "operator") {
    return { author: OPERATOR_NAME, text: body.text, to: body.private ? "you" : undefined };
  }
  if (body.kind === "notice") return { author: "*", text: body.text };
  return null;
}

/**
 * `[12:01:02] alice ✓ hello`: ✓ means the author's own signature verified — for a
 * relayed line the user's, not just the server's (PROTOCOL §6.4).
 */
export function formatIncoming(message: ReceivedMessage): string | null {
  const shown = describe(message);
  if (!shown) return null;
  const time = new Date(message.ts).toTimeString().slice(0, 8);
  if (shown.author === "*") return `[${time}] * ${shown.text}`;
  const to = shown.to ? " (private)" : "";
  return `[${time}] ${shown.author}${to} \u2713 ${shown.text}`;
}

async function credentialsFor(options: ConnectOptions, interactive: boolean): Promise<Credentials> {
  if (options.register && !options.email) {
    throw new SecureChatError("USAGE", "--register needs --email <address>");
  }
  const password = await passwordFor(options, interactive);
  if (!options.register) return { mode: "login", username: options.user, password };
  return { mode: "register", username: options.user, password, email: options.email! };
}

async function passwordFor(options: ConnectOptions, interactive: boolean): Promise<string> {
  if (options.passwordFile) return await readSecretFile(options.passwordFile);
  if (interactive) {
    const password = await promptHidden(`password for ${options.user}: `);
    if (password === null) throw new SecureChatError("USAGE", "no password given");
    if (options.register && await promptHidden("repeat the password: ") !== password) {
      throw new SecureChatError("USAGE", "the passwords differ");
    }
    return password;
  }
  const fromEnv = Deno.env.get("SECURECHAT_PASSWORD");
  if (fromEnv) return fromEnv;
  throw new SecureChatError("USAGE", "no password: stdin is not a terminal", {
    hint: "set SECURECHAT_PASSWORD or use --password-file",
  });
}

/** First line of a file, without its newline: the shape `echo secret > file` makes. */
export async function readSecretFile(path: string): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).split(/\r?\n/)[0];
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot read ${path}`, { cause });
  }
}
