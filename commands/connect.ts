/** `securechat connect`: log in (or register) and chat from the terminal or a script. */
import { transcriptDirectory } from "../lib/transcript/file_storage.ts";
import { join } from "node:path";
import { rsaSignerOf } from "../lib/crypto/signature.ts";
import { Command, Option } from "commander";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { clientHandshake, type Credentials } from "../lib/handshake/client.ts";
import type { Identity } from "../lib/handshake/common.ts";
import type { TrustStore } from "../lib/pki/validate.ts";
import { CHAT_HELP, parseChatLine } from "../lib/session/chat_line.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { SeenStore } from "../lib/session/relay.ts";
import { seenFile } from "../lib/session/seen_file.ts";
import { DEFAULT_MAX_SKEW_MS, peerCause } from "../lib/handshake/common.ts";
import { canonicalName, recipientUser, type RefusalCode } from "../lib/message/record.ts";
import { E2eClient } from "../lib/e2e/client.ts";
import {
  changePasswordWithState,
  confirmsPublication,
  passwordChangeHint,
  readyToSend,
  relayedLine,
  takeE2eMessage,
  verifyLines,
} from "../lib/e2e/chat.ts";
import { openStateFile, resealStateFile } from "../lib/store/e2e_state_file.ts";
import type { SealedState } from "../lib/e2e/sealed_state.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { OPERATOR_NAME } from "../lib/server/lobby.ts";
import { info, positiveInt, privateDir, subcommand } from "./_cli.ts";
import { LineEditor, stdinLines } from "./_tty.ts";
import { askNewPassword, askPassword, heldToRules, readPasswordFile } from "./_password.ts";
import { type History, openHistory } from "./_history.ts";
import { clock, layoutLine, type Screen, screenOf } from "./_screen.ts";
import { safeText } from "../lib/safe_text.ts";
import { loadSettings, type Settings } from "./_home.ts";
import { withAdvice } from "./_advice.ts";
import { preflight } from "./_preflight.ts";
import { isValidEmail } from "../lib/store/account_rules.ts";
import { checkNewPassword, checkPasswordChange } from "../lib/crypto/password.ts";
import {
  Backoff,
  describeServer,
  LineSource,
  parseServers,
  type ServerAddress,
  ServerRotation,
  sleep,
  STOPPED,
} from "./_reconnect.ts";
import { isPermanent, isTakeover, worthReconnecting } from "../lib/session/reconnect.ts";
import { clusterUncertainty, type UnansweredLine, UnansweredLines } from "./_unanswered.ts";

interface ConnectFlags {
  user?: string;
  register?: boolean;
  email?: string;
  host?: string;
  port?: number;
  serverName?: string;
  dir?: string;
  cert?: string;
  key?: string;
  ca?: string;
  crl?: string;
  transcripts?: string;
  passwordFile?: string;
  keyPasswordFile?: string;
  previousPasswordFile?: string;
  history?: string;
  handshakeTimeout: number;
  keyUpdate: number;
  server?: string[];
  reconnect?: boolean;
  reconnectAttempts: number;
  /** Commander's negation of --no-preflight: true unless that flag is given. */
  preflight: boolean;
}

/** The flags with the config file and the home filled in: what `connect` runs with. */
interface ConnectOptions extends ConnectFlags {
  user: string;
  host: string;
  port: number;
  serverName: string;
  cert: string;
  key: string;
  ca: string;
  transcripts: string;
}

/**
 * Flag, else config file, else built-in default (issue 17 item 1).
 * @throws USAGE without a user name
 */
export function connectOptions(flags: ConnectFlags, settings: Settings): ConnectOptions {
  const config = settings.config.connect ?? {};
  const user = flags.user ?? config.user;
  if (!user) {
    throw new SecureChatError("USAGE", "no user name", {
      hint: `pass --user NAME, or set "connect": {"user": NAME} in ${settings.home.configFile}`,
    });
  }
  const dir = flags.dir ?? settings.certs;
  return {
    ...flags,
    user,
    host: flags.host ?? config.host ?? "127.0.0.1",
    port: flags.port ?? config.port ?? 65432,
    serverName: flags.serverName ?? config["server-name"] ?? "localhost",
    cert: flags.cert ?? join(dir, `${user}.pem`),
    key: flags.key ?? join(dir, `${user}.key`),
    ca: flags.ca ?? join(dir, "ca.pem"),
    transcripts: flags.transcripts ?? settings.transcripts,
  };
}

export function registerConnect(program: Command): void {
  subcommand(program, "connect", "Log in to a server and chat.")
    .option("-u, --user <name>", "your user name (the CN of your certificate)")
    .option("--register", "create the account first (asks for an e-mail address with --email)")
    .option("--email <address>", "e-mail address for --register")
    .option("--host <host>", "server address (default 127.0.0.1)")
    .option("--port <port>", "server port (default 65432)", positiveInt("--port", 65535))
    .option(
      "--server <host:port>",
      "a server to use (repeatable: tried from a random one onward; implies --reconnect)",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option("--reconnect", "log in again, with backoff, when the connection drops")
    .option(
      "--reconnect-attempts <n>",
      "failed reconnection attempts in a row before giving up",
      positiveInt("--reconnect-attempts"),
      20,
    )
    .option("--server-name <name>", "name the server certificate must carry (default localhost)")
    .option("--dir <dir>", "PKI directory with ca.pem and <user>.pem/.key (default: the home's)")
    .option("--cert <file>", "your certificate (default <dir>/<user>.pem)")
    .option("--key <file>", "your private key (default <dir>/<user>.key)")
    .option("--ca <file>", "CA certificate to trust (default <dir>/ca.pem)")
    .option("--crl <file>", "CRL to check the server against (default: ca.crl beside --ca)")
    .option(
      "--transcripts <dir>",
      "where to write the transcript and receipts (default: the home's)",
    )
    .option(
      "--password-file <file>",
      "read the password from a file (else prompt or $SECURECHAT_PASSWORD)",
    )
    .option("--key-password-file <file>", "password of an encrypted private key")
    .option(
      "--previous-password-file <file>",
      "your password before a change made from another client, if your end-to-end state is " +
        "still sealed under it (else asked for on a terminal)",
    )
    .option(
      "--key-update <s>",
      "update our chat key after this many seconds (PROTOCOL §4.4)",
      positiveInt("--key-update"),
      3600,
    )
    .option("--history <file>", "also keep a local PLAINTEXT log of the chat (off by default)")
    .option(
      "--no-preflight",
      "dial even if the local checks of certificate, key and password fail (the server decides)",
    )
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
    .action(async (flags: ConnectFlags) => {
      try {
        await connect(connectOptions(flags, await loadSettings()));
      } catch (error) {
        throw withAdvice(error);
      }
    });
}

async function connect(options: ConnectOptions): Promise<void> {
  const interactive = Deno.stdin.isTerminal();
  const { identity, trust } = await preflight({
    ...options,
    keyPassword: options.keyPasswordFile
      ? await readPasswordFile(options.keyPasswordFile)
      : undefined,
    skipChecks: !options.preflight,
  });
  // connect keeps no log: the fallback is one diagnostic line, and the usual case says nothing.
  // A client signs only in its own handshakes and batches, to a server it chose; the server,
  // which signs for anyone, refuses the fallback instead (serve's checkRsaSigner).
  const rsa = rsaSignerOf(identity.signingKey);
  if (rsa && !rsa.native) info(`RSA signing: ${rsa.detail}`);
  await privateDir(options.transcripts);
  let credentials = await credentialsFor(options, interactive);
  const servers = parseServers(options.server, options.host, options.port);
  const reconnect = options.reconnect === true || servers.length > 1;
  const rotation = new ServerRotation(servers);
  const backoff = new Backoff();
  const history = options.history ? await openHistory(options.history) : undefined;
  // The editor needs a terminal on both sides; with stdout piped, stdin is read line by line.
  const editor = interactive && Deno.stdout.isTerminal()
    ? new LineEditor(`${options.user}> `)
    : undefined;
  const screen = screenOf();
  const show = (line: string) => editor ? editor.print(line) : console.log(line);
  // A diagnostic during the chat: on stderr, or above the prompt when the editor owns the screen.
  const note = (message: string) =>
    editor ? editor.print(`securechat: ${safeText(message)}`) : info(message);
  const input = new LineSource(editor ? editor.lines() : stdinLines());
  // Relay high-water marks outlive every session (PROTOCOL §6.4): a record seen in an
  // earlier session — a failover replay, or a server re-delivering it — is not shown again.
  const seenPath = join(options.transcripts, `${canonicalName(options.user)}.seen.json`);
  // Written after every session: its presence says this directory has chatted before, so
  // an end-to-end state missing beside it was lost, not never made.
  const chattedBefore = await Deno.stat(seenPath).then(() => true, () => false);
  const seen = await SeenStore.load(seenFile(seenPath), 2 * DEFAULT_MAX_SKEW_MS);
  // The server's latest resumption ticket (memory only): a reconnection presents it instead of
  // the password, so a node taking over many users skips a password hash for each (DEPLOY §8).
  let ticket: Uint8Array | undefined;
  // End-to-end keys and conversations (PROTOCOL §12.7), encrypted under the login password;
  // opened once the server accepted that password, so a wrong one is the server's AUTH_FAIL.
  const statePassword = "password" in credentials ? credentials.password : "";
  let e2e: E2eClient | undefined;
  let stateFile: SealedState | undefined;
  const statePath = join(options.transcripts, `${canonicalName(options.user)}.e2e`);
  const openE2e = async () => {
    if (e2e) return e2e;
    stateFile = await openOwnState(statePath, statePassword, options, editor);
    e2e = await E2eClient.open(
      stateFile,
      { user: options.user, certDer: identity.certDer, signingKey: identity.signingKey },
      trust,
    );
    if (e2e.fresh && chattedBefore) {
      // Lost state is a new conversation, said plainly (issue 13): never a silent failure.
      info(
        `your end-to-end state ${statePath} is missing (lost or deleted): this client starts ` +
          `again as a new device (${e2e.device}) with fresh keys, published now. Messages ` +
          "sent to your old device cannot be read here; your contacts' next messages reach " +
          "this one, and your next message to each of them starts a new conversation.",
      );
    }
    return e2e;
  };
  try {
    for (let sessions = 0;; sessions++) {
      let session: ChatSession;
      const using: Credentials = {
        ...(ticket ? { mode: "resume", username: credentials.username, ticket } : credentials),
        wantTicket: reconnect,
      };
      try {
        session = await openSession(
          rotation.current(),
          options,
          identity,
          trust,
          using,
          seen,
          openE2e,
        );
      } catch (error) {
        if (using.mode === "resume" && codeOf(error) === "AUTH_FAIL") {
          ticket = undefined; // expired, used or from a restarted server: the password it is
          continue;
        }
        if (!reconnect || isPermanent(error) || backoff.failures >= options.reconnectAttempts) {
          throw error;
        }
        const wait = backoff.next();
        info(
          `cannot log in at ${describeServer(rotation.current())}: ${codeOf(error)}; ` +
            `trying again in ${(wait / 1000).toFixed(1)} s`,
        );
        rotation.advance();
        await sleep(wait);
        continue;
      }
      backoff.reset();
      ticket = session.established.ticket;
      info(
        `${sessions > 0 ? "reconnected: " : ""}${
          using.mode === "register"
            ? "registered and logged in"
            : using.mode === "resume"
            ? "logged in with a resumption ticket"
            : "logged in"
        } as ${session.username} to ${session.established.peer.commonName} at ` +
          `${describeServer(rotation.current())}; session ${session.sessionId}`,
      );
      // The account exists from now on: a reconnection logs in.
      if (credentials.mode === "register") credentials = { ...credentials, mode: "login" };
      const passwd = async (running: Promise<SessionEnd>) => {
        const changed = await changeOwnPassword(session, running, editor, show, {
          file: stateFile!,
          e2e: e2e!,
        });
        if (changed === undefined || credentials.mode === "resume") return;
        // A reconnection logs in with the new password: the ticket from before the change
        // is refused now (its credential epoch is stale), and would count as a failure.
        credentials = { ...credentials, password: changed };
        ticket = undefined;
      };
      const { end, userQuit, unanswered } = await chat(
        session,
        input,
        show,
        history,
        screen,
        passwd,
        await openE2e(),
        note,
      );
      await seen.save();
      await e2e?.save();
      info(`transcript: ${end.transcriptPath}`);
      if (end.receiptPath) info(`receipt: ${end.receiptPath}`);
      if (end.peerReceiptPath) info(`server's receipt: ${end.peerReceiptPath}`);
      if (end.fromPeer && end.code === "CLUSTER_UNAVAILABLE") {
        // A node that cannot learn whether a line was stored ends the session unanswered
        // (PROTOCOL §6.5): the user must not take silence for delivery, nor for loss.
        for (const line of clusterUncertainty(unanswered)) info(line);
      }
      if (!userQuit && reconnect && worthReconnecting(end)) {
        info(
          `connection to ${describeServer(rotation.current())} lost (${whyLost(end)}); ` +
            "reconnecting",
        );
        rotation.advance();
        await sleep(backoff.next());
        continue;
      }
      if (isTakeover(end)) {
        // Known by the close's code alone, never by a notice's words (PROTOCOL §6.2, §7.1).
        info(
          "session taken over: SESSION_TAKEN_OVER: this user logged in again elsewhere" +
            (reconnect ? "; not reconnecting, which would take the session back" : ""),
        );
        // A clean close: the user's own newer login ended it, so a supervisor restarting
        // failed clients does not fight that login for the session.
        if (end.outcome === "closed") return;
      }
      if (end.outcome !== "closed" || end.code) {
        // A clean close with any other code is the server's own certificate lapsing (§5.2).
        throw new SecureChatError(
          (end.code as never) ?? "PROTOCOL_ERROR",
          end.outcome === "peer_gone"
            ? "the server closed the connection without receipts"
            : end.message ?? "session failed",
          // The server's own code is advised as the server's (a refused certificate of ours).
          end.fromPeer ? { cause: peerCause(true) } : {},
        );
      }
      return;
    }
  } finally {
    // The session may end under a half-typed line (the server shut down): say what was lost.
    const unsent = [...input.unsent, ...(editor?.pending ? [editor.pending] : [])];
    editor?.stop();
    for (const line of unsent) info(`not sent (the session ended first): ${line}`);
    await history?.close();
  }
}

/**
 * The end-to-end state, opened with the password the server has just accepted. One that does
 * not open with it is most likely still sealed under the previous password: it was changed
 * from another client, which could not re-seal this device's state (PROTOCOL §12.7). Given
 * that one (--previous-password-file, or asked with echo off on a terminal), the state opens
 * here, locally, and is sealed again under the current password by a password change's steps.
 * @throws DECRYPT_FAIL with what to do (no terminal and no file; it opens with neither);
 *   USAGE (the question cancelled); IO_ERROR
 */
async function openOwnState(
  path: string,
  password: string,
  options: ConnectOptions,
  editor: LineEditor | undefined,
): Promise<SealedState> {
  let locked: unknown;
  try {
    return await openStateFile(path, password);
  } catch (error) {
    if (codeOf(error) !== "DECRYPT_FAIL") throw error;
    locked = error;
  }
  const hint = "if your password was changed from another client, give the previous one: " +
    "run `securechat connect` on a terminal (it asks), or pass --previous-password-file FILE; " +
    "the state is then sealed under your current password. Without it, move the file away to " +
    "start again as a new device (your conversations start anew)";
  let previous: string;
  if (options.previousPasswordFile) {
    previous = await readPasswordFile(options.previousPasswordFile);
  } else if (editor || Deno.stdin.isTerminal()) {
    info(
      `your end-to-end state ${path} does not open with the password you logged in with ` +
        "(changed from another client?)",
    );
    const input = editor ? (question: string) => editor.askHidden(question) : undefined;
    previous = await askPassword("previous password: ", { input });
  } else {
    throw new SecureChatError(
      "DECRYPT_FAIL",
      `the end-to-end state ${path} does not open with the password you logged in with`,
      { cause: locked, hint },
    );
  }
  let state: SealedState;
  try {
    state = await resealStateFile(path, previous, password);
  } catch (error) {
    if (codeOf(error) !== "DECRYPT_FAIL") throw error;
    throw new SecureChatError(
      "DECRYPT_FAIL",
      `the end-to-end state ${path} opens with neither your password nor the previous one given`,
      { cause: error, hint },
    );
  }
  info(
    `your end-to-end state ${path} is sealed under your current password now: the same ` +
      "device, its conversations kept",
  );
  return state;
}

/** Dials one server, runs the handshake and starts the session (its transcript). */
async function openSession(
  server: ServerAddress,
  options: ConnectOptions,
  identity: Identity,
  trust: TrustStore,
  credentials: Credentials,
  seen: SeenStore,
  openE2e: () => Promise<E2eClient>,
): Promise<ChatSession> {
  let tcp: Deno.TcpConn;
  try {
    tcp = await Deno.connect({ hostname: server.host, port: server.port });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot connect to ${describeServer(server)}`, {
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
  let e2e: E2eClient;
  try {
    e2e = await openE2e();
  } catch (error) {
    established.conn.close();
    throw error;
  }
  const session = await ChatSession.start(established, {
    transcripts: transcriptDirectory(options.transcripts),
    serverName: options.serverName,
    relayTrust: trust,
    seen,
    keepKeys: true,
    keyUpdateMs: options.keyUpdate * 1000,
    e2e,
  });
  // Our bundle (signed by our certificate) goes to the server's key directory at every login.
  // It is the session's first message, before any typed line (a failure only means first
  // contacts to us wait for our next login).
  await e2e.publish(session).catch(() => {});
  return session;
}

/** Why a session ended, for the line that says the client reconnects: the code and its detail. */
function whyLost(end: SessionEnd): string {
  if (end.outcome === "closed") return "the server closed it";
  if (end.code === undefined) return "cut off";
  return end.message ? `${end.code}: ${end.message}` : end.code;
}

/** One session: shows what arrives, sends what is typed, until either side ends it. */
async function chat(
  session: ChatSession,
  input: LineSource,
  show: (line: string) => void,
  history: History | undefined,
  screen: Screen,
  passwd: (running: Promise<SessionEnd>) => Promise<void>,
  e2e: E2eClient,
  note: (message: string) => void,
): Promise<{ end: SessionEnd; userQuit: boolean; unanswered: UnansweredLine[] }> {
  let published = false;
  const unanswered = new UnansweredLines();
  const running = session.run({
    onMessage: async (message) => {
      if (message.type === "refused" || message.type === "queued") unanswered.answered(message.of);
      if (message.type === "relay" && message.relayed.record.sid === session.sessionId) {
        unanswered.answered(message.relayed.record.seqno); // a private line to ourselves
      }
      if (!published && confirmsPublication(e2e, message)) {
        published = true;
        note(`end-to-end keys published: this device is ${e2e.device}`);
      }
      if (await takeE2eMessage(e2e, message, session)) return;
      if (message.type === "refused") {
        note(`message ${message.of} refused by the server: ${message.code}`);
        const why = REFUSAL_ADVICE[message.code];
        if (why) note(why);
        return;
      }
      if (message.type === "queued") {
        note(
          `message ${message.of} stored: the recipient is not online; ` +
            "it is delivered at their next login",
        );
        return;
      }
      if (message.type === "relay" && message.relayed.duplicate) return; // shown before
      const line = formatIncoming(message, screen);
      if (line) show(line);
      const shown = describe(message);
      if (shown) history?.record(message.ts, shown.author, shown.text, shown.to);
    },
  });
  // A fetch sent just before the connection dropped is never answered: fail it now.
  const ended = () => e2e.sessionEnded(session);
  running.then(ended, ended);
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    void session.close().catch(() => {});
  };
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    const userQuit = await chatInput(
      session,
      input,
      running,
      show,
      history,
      passwd,
      e2e,
      unanswered,
    );
    if (userQuit) await session.close().catch(() => {});
    const end = await running;
    return { end, userQuit: userQuit || interrupted, unanswered: unanswered.open() };
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
  }
}

/**
 * Lines piped in are sent with up to this many in flight: each is numbered at once and
 * signed while earlier ones travel, so a script is not held to one signature at a time.
 */
const SENDS_IN_FLIGHT = 32;

/** Sends each input line; true when the user ended the chat, false when the session ended. */
async function chatInput(
  session: ChatSession,
  input: LineSource,
  running: Promise<SessionEnd>,
  show: (line: string) => void,
  history: History | undefined,
  passwd: (running: Promise<SessionEnd>) => Promise<void>,
  e2e: E2eClient,
  unanswered: UnansweredLines,
): Promise<boolean> {
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let userQuit = false;
  for (;;) {
    const line = await input.next(running);
    if (line === STOPPED) break;
    if (line === null || session.closing || failure !== undefined) {
      // Taken, not sent: it goes to the next session (or is said unsent at the exit).
      if (line !== null) input.unread(line);
      userQuit = line === null;
      break;
    }
    const parsed = parseChatLine(line);
    if (parsed.action === "quit") {
      userQuit = true;
      break;
    }
    if (parsed.action === "help") show(CHAT_HELP);
    if (parsed.action === "passwd") await passwd(running);
    if (parsed.action === "error") show(safeText(`securechat: ${parsed.message}`));
    if (parsed.action === "verify") {
      for (const { text, problem } of await verifyLines(e2e, parsed.user, session)) {
        show(safeText(problem ? `securechat: ${text}` : text));
      }
      continue;
    }
    if (parsed.action !== "send") continue;
    const { body, to } = parsed;
    // The lobby's sender key or the recipient's devices first (PROTOCOL §12.5, §12.3).
    const { warnings, refusal, hint } = await readyToSend(e2e, to, session);
    if (refusal && session.closing) {
      // The session ended while the keys were made ready (its node died): not refused, unsent.
      input.unread(line);
      break;
    }
    for (const warning of warnings) show(safeText(`securechat: ${warning}`));
    if (refusal) {
      show(safeText(`securechat: ${refusal}`));
      if (hint) show(safeText(`hint: ${hint}`));
      continue;
    }
    const sending: Promise<void> = session.send(body, to).then(
      (seqno) => {
        const privateTo = recipientUser(to) ?? undefined;
        if (body.kind === "text") {
          unanswered.sent(seqno, to, body.text);
          history?.record(Date.now(), session.username, body.text, privateTo);
        }
      },
      (error) => {
        // Refused before it took a seqno (PROTOCOL §6.3 step 7: the server could not relay it):
        // nothing was sent and the session goes on. Later, the session has ended with it.
        if (codeOf(error) === "INVALID_INPUT" && !session.closing) {
          show(safeText(`securechat: ${(error as Error).message}`));
          return;
        }
        failure ??= error;
      },
    ).finally(() => inFlight.delete(sending));
    inFlight.add(sending);
    while (inFlight.size >= SENDS_IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  // A send failing because the connection dropped under us is not the error: run() says why,
  // once it has noticed too. If it has not within a second (a node killed under load: the
  // write fails before the read sees the end), the failure ends the session, so that
  // --reconnect decides on it as on any other end instead of the client exiting.
  if (failure !== undefined && !session.closing) {
    const ended = await Promise.race([running.then(() => true), sleep(1000).then(() => false)]);
    if (!ended) {
      session.abort(
        failure instanceof SecureChatError
          ? failure
          : new SecureChatError("INTERNAL", String(failure), { cause: failure }),
      );
    }
  }
  return userQuit;
}

/** What to do about a refusal (PROTOCOL §6.5, §6.6), beyond its code. */
const REFUSAL_ADVICE: Partial<Record<RefusalCode, string>> = {
  NOT_ONLINE: "the recipient is not online and the server will not keep it for them " +
    "(no such account, or the message was not end-to-end encrypted)",
  QUEUE_FULL: "the recipient has too many messages waiting; try again after their next login",
  DB_UNAVAILABLE: "the server could not store it for the offline recipient; try again later",
  RATE_LIMITED: "you are sending faster than the server allows; slow down",
  CLUSTER_UNAVAILABLE: "the server cannot reach the rest of its cluster; try again",
};

/**
 * `/passwd` (PROTOCOL §6.7): the current password, then the new one twice, typed unechoed in
 * the editor and checked against the rules here before the server checks them again. The
 * end-to-end state, encrypted under the password, follows it (§12.7): it is written under
 * both until the server answers, so a crash at any point leaves it readable with whichever
 * password the server has.
 * @returns the new password once the server has changed it; undefined otherwise (said why)
 */
async function changeOwnPassword(
  session: ChatSession,
  running: Promise<SessionEnd>,
  editor: LineEditor | undefined,
  show: (line: string) => void,
  state: { file: SealedState; e2e: E2eClient },
): Promise<string | undefined> {
  if (!editor) {
    show(
      "securechat: /passwd needs a terminal (passwords are typed without echo); the operator " +
        "can set one with `securechat user passwd NAME`",
    );
    return undefined;
  }
  const input = (question: string) => editor.askHidden(question, running);
  try {
    const current = await askPassword("current password: ", { input });
    const next = await askNewPassword("new password: ", {
      input,
      rules: (password) => checkPasswordChange(current, password),
    });
    show("securechat: changing your password...");
    const { warning } = await changePasswordWithState(
      session,
      state.file,
      state.e2e,
      current,
      next,
    );
    if (warning) show(safeText(`securechat: warning: ${warning}`));
    show(
      "securechat: password changed: log in with the new one from now on (resumption tickets " +
        "issued before are refused, on every server)",
    );
    return next;
  } catch (error) {
    const advised = passwordChangeHint(error);
    show(safeText(`securechat: password not changed: ${(error as Error).message}`));
    if (advised) show(safeText(`hint: ${advised}`));
    return undefined;
  }
}

/** Who wrote an incoming message and what it says; null for messages not meant for display. */
function describe(
  message: ReceivedMessage,
): { author: string; text: string; to?: string; stored?: boolean } | null {
  if (message.type === "relay") {
    const { relayed } = message;
    return {
      author: relayed.author,
      text: relayedLine(relayed),
      to: relayed.private ? "you" : undefined,
      stored: relayed.stored,
    };
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
 * relayed line the user's, not just the server's (PROTOCOL §6.4). Notices from the
 * server are `[12:01:02] * text`. The text is laid out by `layoutLine`, so it can never
 * look like the head of another line (issue 11 item 1).
 */
export function formatIncoming(message: ReceivedMessage, screen: Screen): string | null {
  const shown = describe(message);
  if (!shown) return null;
  if (shown.author === "*") return layoutLine(screen, `${clock(message.ts)} *`, shown.text);
  if (shown.stored && message.type === "relay") {
    // Written while we were away (PROTOCOL §6.6): the author's own time, said plainly.
    const written = message.relayed.record.ts;
    return layoutLine(
      screen,
      `${clock(written)} ${safeText(shown.author)} (private, while you were away) \u2713`,
      shown.text,
    );
  }
  const to = shown.to ? " (private)" : "";
  return layoutLine(
    screen,
    `${clock(message.ts)} ${safeText(shown.author)}${to} \u2713`,
    shown.text,
  );
}

async function credentialsFor(options: ConnectOptions, interactive: boolean): Promise<Credentials> {
  if (options.register && !options.email) {
    throw new SecureChatError("USAGE", "--register needs --email <address>");
  }
  // The server's own rules, checked here first so a typo costs no round trip (issue 17 item 3).
  if (options.register && !isValidEmail(options.email!)) {
    throw new SecureChatError(
      "USAGE",
      `--email ${options.email} does not look like name@example.org`,
    );
  }
  const password = await passwordFor(options, interactive);
  if (password === "") {
    throw new SecureChatError("USAGE", "the password is empty", {
      hint: "check --password-file or SECURECHAT_PASSWORD",
    });
  }
  if (!options.register || !options.preflight) {
    return options.register
      ? { mode: "register", username: options.user, password, email: options.email! }
      : { mode: "login", username: options.user, password };
  }
  heldToRules(
    password,
    checkNewPassword,
    "choose a longer password (a passphrase of a few words is easy to type)",
  );
  return { mode: "register", username: options.user, password, email: options.email! };
}

async function passwordFor(options: ConnectOptions, interactive: boolean): Promise<string> {
  if (options.passwordFile) return await readPasswordFile(options.passwordFile);
  if (interactive) {
    const question = `password for ${options.user}: `;
    // With --no-preflight the server alone judges the password (its refusal is the test).
    return options.register
      ? await askNewPassword(question, { rules: options.preflight ? checkNewPassword : undefined })
      : await askPassword(question);
  }
  const fromEnv = Deno.env.get("SECURECHAT_PASSWORD");
  if (fromEnv) return fromEnv;
  throw new SecureChatError("USAGE", "no password: stdin is not a terminal", {
    hint: "set SECURECHAT_PASSWORD or use --password-file",
  });
}
