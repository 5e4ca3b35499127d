/**
 * The chat server: accepts TCP connections, runs each through admission, the
 * handshake and a chat session, and joins it to the lobby. One connection's
 * failure is logged with its code and never touches another's.
 */
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Credentials, Identity } from "../handshake/common.ts";
import { serverHandshake } from "../handshake/server.ts";
import type { KexGroup } from "../crypto/kex.ts";
import type { TrustStore } from "../pki/validate.ts";
import { ChatSession, type ChatSessionOptions } from "../session/session.ts";
import type { UserStore } from "../store/user_store.ts";
import { type ByteStreamConn, FrameConnection } from "../wire/connection.ts";
import { encodeFrame } from "../wire/frame.ts";
import { utf8 } from "../bytes.ts";
import {
  Admission,
  type AdmissionLimits,
  DEFAULT_ADMISSION,
  LoginThrottle,
  type LoginThrottleOptions,
} from "./limits.ts";
import { DEFAULT_LOBBY_LIMITS, Lobby, type LobbyLimits, Member } from "./lobby.ts";
import type { ClusterLink } from "../cluster/link.ts";
import { readProxyHeader } from "./proxy_protocol.ts";
import type { TicketAuthority } from "../resumption/ticket.ts";

export interface ServerOptions {
  hostname: string;
  port: number;
  identity: Identity;
  trust: TrustStore;
  store: UserStore;
  log: Logger;
  session: Omit<ChatSessionOptions, "startedAt">;
  groups?: readonly KexGroup[];
  handshakeTimeoutMs?: number;
  sendQueueBytes?: number;
  admission?: Partial<AdmissionLimits>;
  loginThrottle?: LoginThrottleOptions;
  lobby?: Partial<LobbyLimits>;
  /** This node's link to the others (docs/DEPLOY.md); absent for a single server. */
  cluster?: ClusterLink;
  /**
   * Addresses of load balancers whose connections start with a PROXY protocol v2 header naming
   * the client, whose address the per-address limits then use.
   */
  trustedProxies?: readonly string[];
  /** Issues and redeems session resumption tickets (docs/DEPLOY.md §8); none without it. */
  tickets?: TicketAuthority;
}

export class ChatServer {
  readonly lobby: Lobby;
  readonly #listener: Deno.TcpListener;
  readonly #opts: ServerOptions;
  readonly #admission: Admission;
  readonly #throttle: LoginThrottle;
  readonly #connections = new Set<Promise<void>>();
  #accepting: Promise<void>;
  #stopping = false;

  private constructor(listener: Deno.TcpListener, opts: ServerOptions) {
    this.#listener = listener;
    this.#opts = opts;
    this.#admission = new Admission({ ...DEFAULT_ADMISSION, ...opts.admission });
    this.#throttle = new LoginThrottle(opts.loginThrottle);
    this.lobby = new Lobby(opts.log, { ...DEFAULT_LOBBY_LIMITS, ...opts.lobby }, opts.cluster);
    this.#accepting = this.#acceptLoop();
  }

  /** @throws IO_ERROR when the address cannot be bound */
  static listen(opts: ServerOptions): ChatServer {
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot listen on ${opts.hostname}:${opts.port}`, {
        cause,
        hint: "is another server running on that port?",
      });
    }
    const server = new ChatServer(listener, opts);
    opts.log("LISTEN", { detail: `${opts.hostname}:${server.port}`, db: opts.store.description });
    return server;
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /** Joins the cluster: starts taking records, logins and lockouts from the other nodes. */
  async startCluster(): Promise<void> {
    await this.#opts.cluster?.start({
      ...this.lobby.clusterHandlers(),
      authFailed: (keys) => this.#throttle.failed(keys),
      authSucceeded: (keys) => this.#throttle.succeeded(keys),
    });
  }

  /** Listening, and in a cluster connected to it: what `serve --health-port` reports. */
  get healthy(): boolean {
    return !this.#stopping && (this.#opts.cluster?.healthy ?? true);
  }

  /** Stops accepting, closes every session with receipts, waits for them to finish. */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#listener.close();
    await this.#accepting;
    await this.lobby.closeAll("the server is shutting down; this session is closed with receipts");
    await Promise.allSettled([...this.#connections]);
    await this.#opts.cluster?.close();
    this.#opts.log("SHUTDOWN", {});
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#stopping) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping || error instanceof Deno.errors.BadResource) return;
        this.#opts.log("ACCEPT_ERROR", { detail: String(error) });
        continue;
      }
      const task = this.#serve(conn).catch((error) => {
        this.#opts.log("INTERNAL", { detail: String(error) });
      });
      this.#connections.add(task);
      void task.finally(() => this.#connections.delete(task));
    }
  }

  async #serve(tcp: Deno.TcpConn): Promise<void> {
    // Handshake flights are small frames answered at once: Nagle's algorithm with
    // delayed ACKs would add ~40 ms per round trip (docs/PERFORMANCE.md).
    tcp.setNoDelay(true);
    const { log } = this.#opts;
    let address = tcp.remoteAddr.hostname;
    let peer = `${address}:${tcp.remoteAddr.port}`;
    if (this.#opts.trustedProxies?.includes(address)) {
      // A balancer we trust says who the client is (docs/DEPLOY.md §5).
      try {
        const client = await readProxyHeader(tcp, this.#opts.handshakeTimeoutMs ?? 10_000);
        if (client.hostname !== undefined) {
          address = client.hostname;
          peer = `${client.hostname}:${client.port}`;
        }
      } catch (error) {
        log(codeOf(error), { peer, detail: (error as Error).message });
        tcp.close();
        return;
      }
    }
    await this.#admit(tcp, address, peer);
  }

  /**
   * Serves a connection another transport accepted (the WebSocket front, lib/server/web.ts):
   * the same admission, handshake, session and lobby as a TCP connection.
   * `address` is the client's IP address, for the per-address limits.
   */
  serveConnection(conn: ByteStreamConn, address: string, peer: string): void {
    if (this.#stopping) {
      conn.close();
      return;
    }
    const task = this.#admit(conn, address, peer).catch((error) => {
      this.#opts.log("INTERNAL", { detail: String(error) });
    });
    this.#connections.add(task);
    void task.finally(() => this.#connections.delete(task));
  }

  async #admit(stream: ByteStreamConn, address: string, peer: string): Promise<void> {
    const { log } = this.#opts;
    try {
      this.#admission.connect(address);
    } catch (error) {
      log(codeOf(error), { peer, detail: (error as Error).message });
      await refuse(stream, codeOf(error));
      return;
    }
    log("CONNECT", { peer });
    try {
      await this.#session(stream, address, peer);
    } finally {
      this.#admission.disconnect(address);
    }
  }

  async #session(stream: ByteStreamConn, address: string, peer: string): Promise<void> {
    const { log } = this.#opts;
    const conn = new FrameConnection(stream, { maxQueuedBytes: this.#opts.sendQueueBytes });
    let user: string | undefined;
    let method: "password" | "ticket" | undefined;
    let session: ChatSession;
    try {
      const established = await serverHandshake(conn, {
        identity: this.#opts.identity,
        trust: this.#opts.trust,
        groups: this.#opts.groups,
        timeoutMs: this.#opts.handshakeTimeoutMs,
        admit: () => this.#admission.admitHandshake(address),
        authenticate: (request, client) => {
          user = request.username;
          method = request.mode === "resume" ? "ticket" : "password";
          return this.#authenticate(request, address, client.fingerprint);
        },
      });
      session = await ChatSession.start(established, {
        ...this.#opts.session,
        startedAt: Date.now(),
      });
    } catch (error) {
      log(codeOf(error), { peer, user, detail: (error as Error).message });
      conn.close();
      return;
    }
    const sessionId = session.sessionId;
    user = session.username;
    log("LOGIN", { peer, user, method, session: sessionId, transcript: session.transcriptPath });
    const member = new Member(session, peer, this.lobby.limits, (error) => {
      log(error.code, { peer, user, session: sessionId, detail: error.message });
      session.abort(error);
    });
    const running = session.run({
      onMessage: (message) => this.lobby.receive(member, message),
    });
    await this.lobby.join(member);
    const end = await running;
    await this.lobby.leave(member);
    if (end.code) log(end.code, { peer, user, session: sessionId, detail: end.message });
    log("CLOSE", {
      peer,
      user,
      session: sessionId,
      outcome: end.outcome,
      receipt: end.receiptPath ?? "none",
    });
  }

  /**
   * The operator forgives a user's (or an address's) failed logins: the lockout ends now,
   * on every node of a cluster, instead of when the window passes.
   */
  unlock(target: { user: string } | { address: string }): void {
    const keys = "user" in target
      ? [`user:${target.user.toLowerCase()}`]
      : [`addr:${target.address}`];
    this.#throttle.succeeded(keys);
    this.#opts.cluster?.authSucceeded(keys);
    this.#opts.log("UNLOCKED", "user" in target ? { user: target.user } : { peer: target.address });
  }

  /**
   * Checks a password, a registration or a resumption ticket (bound to the certificate with
   * SHA-256 `certFingerprint`), and issues the next ticket when the server has an authority.
   */
  async #authenticate(
    request: Credentials,
    address: string,
    certFingerprint: string,
  ): Promise<{ registered: boolean; ticket?: Uint8Array }> {
    const keys = [`user:${request.username.toLowerCase()}`, `addr:${address}`];
    const delay = this.#throttle.delayFor(keys);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    try {
      if (request.mode === "register") {
        await this.#opts.store.register(request);
      } else if (request.mode === "resume") {
        if (!this.#opts.tickets) {
          throw new SecureChatError("AUTH_FAIL", "this server issues no resumption tickets");
        }
        await this.#opts.tickets.redeem(request.ticket, request.username, certFingerprint);
      } else {
        await this.#opts.store.login(request.username, request.password);
      }
    } catch (error) {
      if (codeOf(error) === "AUTH_FAIL") {
        this.#throttle.failed(keys);
        this.#opts.cluster?.authFailed(keys);
      }
      throw error;
    }
    this.#throttle.succeeded(keys);
    this.#opts.cluster?.authSucceeded(keys);
    // No ticket (the ticket store is down) only costs the next login a password hash.
    const ticket = !request.wantTicket ? undefined : await this.#opts.tickets
      ?.issue(request.username, certFingerprint)
      .catch((error) =>
        void this.#opts.log(codeOf(error), {
          user: request.username,
          detail: `no resumption ticket issued: ${(error as Error).message}`,
        })
      );
    return { registered: request.mode === "register", ...(ticket ? { ticket } : {}) };
  }
}

/** Tells a refused peer why, in one plaintext error frame, and closes. */
async function refuse(stream: ByteStreamConn, code: string): Promise<void> {
  try {
    await stream.write(encodeFrame(utf8(JSON.stringify({ type: "error", code }))));
  } catch {
    // peer already gone
  } finally {
    stream.close();
  }
}
