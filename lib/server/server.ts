/**
 * The chat server: accepts TCP connections, runs each through admission, the
 * handshake and a chat session, and joins it to the lobby. One connection's
 * failure is logged with its code and never touches another's.
 */
import { codeOf, SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Credentials, Identity } from "../handshake/common.ts";
import { type HelloCookies, serverHandshake } from "../handshake/server.ts";
import { CookieJar } from "../handshake/cookie.ts";
import type { KexGroup } from "../crypto/kex.ts";
import type { TrustStore, ValidatedPeer } from "../pki/validate.ts";
import { ChatSession, type ChatSessionOptions } from "../session/session.ts";
import type { UserStore } from "../store/user_store.ts";
import { type ByteStreamConn, FrameConnection, LINGER_MS } from "../wire/connection.ts";
import { utf8 } from "../bytes.ts";
import { atDeadline } from "../deadlines.ts";
import {
  Admission,
  type AdmissionLimits,
  DEFAULT_ADMISSION,
  LoginThrottle,
  type LoginThrottleOptions,
  type Slot,
} from "./limits.ts";
import { DEFAULT_LOBBY_LIMITS, Lobby, type LobbyLimits, Member } from "./lobby.ts";
import type { ClusterLink } from "../cluster/link.ts";
import { readProxyHeader } from "./proxy_protocol.ts";
import {
  checkOwnCertificate,
  closeMarginMs,
  type OwnCertificate,
  ownCertificate,
  watchOwnCertificate,
} from "./own_certificate.ts";
import type { CloseCode } from "../wire/messages.ts";
import { DEFAULT_CLOSE_TIMEOUT_MS } from "../session/session.ts";
import { CrlWatcher } from "./revocation.ts";
import { retireRevoked } from "./queue_revocation.ts";
import { canonicalName } from "../pki/names.ts";
import type { TicketAuthority } from "../resumption/ticket.ts";
import { DEFAULT_QUEUE_LIMITS, type QueueLimits } from "../store/message_queue.ts";
import { checkPasswordChange } from "../crypto/password.ts";
import { MemoryLoginFailures } from "../store/login_failures.ts";

/** How often expired offline records are purged (they are never handed out once expired). */
const QUEUE_PURGE_INTERVAL_MS = 10 * 60 * 1000;
/**
 * The most refused connections (no slot: TOO_MANY_CONNECTIONS, a retired server's refusal) that
 * linger after their `error` at once; each lingers LINGER_MS at most.
 */
const MAX_REFUSALS_LINGERING = 64;

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
  /** The CRL file to follow (issue 11 item 2); without it the CRL loaded at start stays. */
  revocation?: { crlPath: string; checkIntervalMs?: number };
  /** Issues and redeems session resumption tickets (docs/DEPLOY.md §8); none without it. */
  tickets?: TicketAuthority;
  /** Bounds of each user's offline queue (PROTOCOL §6.6); the store's queue holds it. */
  queue?: Partial<QueueLimits>;
  /** `serve --keylog` (PROTOCOL §12.9): one line per transport secret; absent by default. */
  keylog?: (line: string) => void;
}

export class ChatServer {
  readonly lobby: Lobby;
  readonly #listener: Deno.TcpListener;
  readonly #opts: ServerOptions;
  readonly #admission: Admission;
  readonly #throttle: LoginThrottle;
  readonly #connections = new Set<Promise<void>>();
  /** Connections admitted and not yet logged in: what a shutdown closes at once. */
  readonly #inHandshake = new Set<FrameConnection>();
  /** Refused connections lingering after their `error` (#refuse). */
  #refusalsLingering = 0;
  readonly #crl?: CrlWatcher;
  readonly #cookies = new CookieJar();
  readonly #purgeTimer?: ReturnType<typeof setInterval>;
  /** Resolved once startCluster() has run (at once for a single server). */
  readonly #clusterJoined = Promise.withResolvers<void>();
  #accepting: Promise<void>;
  #stopping = false;
  /** This server's certificate window (PROTOCOL §5.2), watched while it runs. */
  readonly #own: OwnCertificate;
  readonly #ownWatch: { stop(): void };
  /** Set once its certificate lapses or is revoked: sessions close, connections are refused. */
  #retired?: CloseCode;

  private constructor(
    listener: Deno.TcpListener,
    opts: ServerOptions,
    own: OwnCertificate,
    marginMs: number,
  ) {
    this.#listener = listener;
    this.#opts = opts;
    this.#own = own;
    this.#ownWatch = watchOwnCertificate(
      own,
      marginMs,
      opts.log,
      () => this.#retire("SERVER_CERT_EXPIRED"),
    );
    this.#admission = new Admission({ ...DEFAULT_ADMISSION, ...opts.admission });
    // A store without failure counts of its own (a test double) keeps them in this process.
    this.#throttle = new LoginThrottle(
      opts.store.failures ?? new MemoryLoginFailures(),
      opts.loginThrottle,
    );
    const queue = opts.store.queue;
    this.lobby = new Lobby(
      opts.log,
      { ...DEFAULT_LOBBY_LIMITS, ...opts.lobby },
      opts.cluster,
      queue && {
        queue,
        limits: { ...DEFAULT_QUEUE_LIMITS, ...opts.queue },
        lapsed: (certDer) => opts.trust.lapsed(certDer),
      },
      opts.store.keys,
      (cert) => {
        try {
          return opts.trust.lapsed(cert) === "revoked";
        } catch {
          return false; // no certificate: the asker refuses the bundle itself (§12.6)
        }
      },
    );
    if (queue) {
      const purge = () =>
        void queue.purgeExpired().then(
          (n) => n > 0 && opts.log("QUEUE_PURGED", { detail: `${n} expired offline records` }),
          (error) => opts.log(codeOf(error), { detail: `offline queue purge: ${error.message}` }),
        );
      purge();
      this.#purgeTimer = setInterval(purge, QUEUE_PURGE_INTERVAL_MS);
      Deno.unrefTimer(this.#purgeTimer);
    }
    if (opts.revocation) {
      this.#crl = new CrlWatcher({
        path: opts.revocation.crlPath,
        intervalMs: opts.revocation.checkIntervalMs,
        trust: opts.trust,
        log: opts.log,
        onRevoked: (serials) => this.#endRevoked(serials),
        share: opts.cluster && ((der) => opts.cluster!.shareCrl(der)),
      });
    }
    if (!opts.cluster) this.#clusterJoined.resolve();
    this.#accepting = this.#acceptLoop();
  }

  /**
   * @throws BAD_CERT when the server's own certificate (or the CA's) is not valid now, lapses
   *   within the close margin, or is revoked (PROTOCOL §5.2); IO_ERROR when the address cannot
   *   be bound
   */
  static listen(opts: ServerOptions): ChatServer {
    const own = ownCertificate(opts.identity.certDer, opts.trust);
    const marginMs = closeMarginMs(opts.session.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS);
    checkOwnCertificate(own, opts.trust, marginMs);
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    } catch (cause) {
      throw new SecureChatError("IO_ERROR", `cannot listen on ${opts.hostname}:${opts.port}`, {
        cause,
        hint: "is another server running on that port?",
      });
    }
    const server = new ChatServer(listener, opts, own, marginMs);
    opts.log("LISTEN", { detail: `${opts.hostname}:${server.port}`, db: opts.store.description });
    void server.#crl?.start();
    return server;
  }

  /** Re-reads the CRL file now (serve calls this on SIGHUP); every outcome is logged. */
  async reloadCrl(): Promise<void> {
    await this.#crl?.reload();
  }

  /**
   * Ends the live sessions of newly revoked certificates, each with REVOKED, then removes the
   * devices they certified from the key directory, what they left in offline queues and what
   * waits there for those devices.
   */
  #endRevoked(serials: Set<string>): void {
    if (serials.has(this.#own.serial)) this.#retire("SERVER_CERT_REVOKED");
    for (const member of this.lobby.localMembers()) {
      if (serials.has(member.session.established.peer.serial)) this.#revoke(member);
    }
    void retireRevoked(this.#opts.store, serials, this.#opts.log);
  }

  #revoke(member: Member): void {
    const serial = member.session.established.peer.serial;
    this.#endFor(
      member,
      "REVOKED",
      `certificate serial ${serial} is on the new CRL`,
      "your certificate has been revoked",
    );
  }

  /**
   * Ends a session whose certificate (or the CA's) just expired: a line signed after that
   * would go out under a certificate no verifier accepts at its time (interop finding 44).
   */
  #expire(member: Member): void {
    this.#endFor(
      member,
      "BAD_CERT",
      "the session's certificate expired",
      "your certificate expired",
    );
  }

  /** Logs why a member's session ends (the event is the code) and ends it with that code. */
  #endFor(member: Member, code: "REVOKED" | "BAD_CERT", detail: string, toPeer: string): void {
    const { session } = member;
    if (session.closing) return;
    this.#opts.log(code, {
      peer: member.peer,
      user: member.username,
      session: session.sessionId,
      detail,
    });
    void session.terminate(new SecureChatError(code, toPeer));
  }

  /**
   * The server can no longer sign (PROTOCOL §5.2): every session closes now, with receipts
   * its certificate still covers, and every later connection is refused with `code`.
   */
  #retire(code: CloseCode): void {
    if (this.#retired || this.#stopping) return;
    this.#retired = code;
    this.#ownWatch.stop();
    const why = code === "SERVER_CERT_REVOKED"
      ? "the server certificate has been revoked"
      : `the ${this.#own.lapsing} expires at ${new Date(this.#own.lapsesAt).toISOString()}`;
    this.#opts.log(code, {
      detail: `${why}: every session is closed with receipts now and new connections are ` +
        "refused until serve is restarted with a new certificate",
    });
    void this.lobby.closeAll(`${why}: the server closes this session, with receipts`, code);
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /**
   * Joins the cluster: settles the CRL with the one the nodes share, then starts taking
   * records, logins and CRLs from the other nodes (lockouts need no message: the nodes share
   * the store that counts them). A cluster node accepts no connection before this: a
   * revocation another node shared holds from its first login.
   * @throws CLUSTER_UNAVAILABLE
   */
  async startCluster(): Promise<void> {
    try {
      await this.#opts.cluster?.start({
        ...this.lobby.clusterHandlers(),
        crl: async (shared) => await this.#crl?.offerShared(shared),
      });
    } finally {
      this.#clusterJoined.resolve();
    }
  }

  /** Listening, and in a cluster connected to it: what `serve --health-port` reports. */
  get healthy(): boolean {
    return !this.#stopping && !this.#retired && (this.#opts.cluster?.healthy ?? true);
  }

  /** Stops accepting, closes every session with receipts, waits for them to finish. */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#clusterJoined.resolve();
    this.#crl?.stop();
    this.#ownWatch.stop();
    clearInterval(this.#purgeTimer);
    this.#listener.close();
    await this.#accepting;
    // A connection still in its handshake has no session to close with receipts: it is
    // closed now, not left to run out its handshake timeout while the process waits.
    for (const conn of this.#inHandshake) conn.close();
    await this.lobby.closeAll("the server is shutting down; this session is closed with receipts");
    await Promise.allSettled([...this.#connections]);
    await this.#opts.cluster?.close();
    this.#opts.log("SHUTDOWN", {});
  }

  async #acceptLoop(): Promise<void> {
    // Connections wait in the listen backlog meanwhile.
    await this.#clusterJoined.promise;
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
    // Returned, not awaited: this frame ends here instead of waiting out the whole session.
    return this.#admit(tcp, address, peer);
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
    const conn = new FrameConnection(stream, { maxQueuedBytes: this.#opts.sendQueueBytes });
    if (this.#retired) {
      // No handshake: it would be signed under a certificate about to lapse, or revoked.
      log(this.#retired, {
        peer,
        detail: `connection refused: the server certificate ${
          this.#retired === "SERVER_CERT_REVOKED" ? "is revoked" : "expires"
        }; restart serve with a new one`,
      });
      await this.#refuse(conn, this.#retired);
      return;
    }
    let slot: Slot;
    try {
      slot = this.#admission.connect(address, () => {
        log("SHED", { peer, detail: "pending handshake closed to make room (server full)" });
        conn.close();
      });
    } catch (error) {
      log(codeOf(error), { peer, detail: (error as Error).message });
      await this.#refuse(conn, codeOf(error));
      return;
    }
    log("CONNECT", { peer });
    this.#inHandshake.add(conn);
    try {
      await this.#session(conn, address, peer, slot);
    } finally {
      this.#inHandshake.delete(conn);
      slot.release();
    }
  }

  /**
   * Tells a refused peer why, in one plaintext error frame, and closes, lingering after it as a
   * session's end does (PROTOCOL §7): its hello may be on its way. A refused connection holds
   * no slot, so at most MAX_REFUSALS_LINGERING linger at once and the rest close straight away:
   * a flood of connections to a full server cannot make it hold a descriptor for each. (On the
   * WebSocket front, closing waits for the peer's close under the front's own bound:
   * websocket_conn.ts MAX_AWAITING_CLOSE.)
   */
  async #refuse(conn: FrameConnection, code: string): Promise<void> {
    try {
      conn.send(utf8(JSON.stringify({ type: "error", code })));
    } catch {
      // cannot happen on a fresh connection; the log has the code
    }
    if (this.#refusalsLingering >= MAX_REFUSALS_LINGERING) {
      await conn.flush(LINGER_MS);
      conn.close();
      return;
    }
    this.#refusalsLingering++;
    try {
      await conn.lingerClose();
    } finally {
      this.#refusalsLingering--;
    }
  }

  /** This connection's hello cookies (PROTOCOL §5.1), demanded while the server is under load. */
  #cookiesFor(address: string): HelloCookies {
    return {
      demanded: () => this.#admission.underLoad(),
      issue: (hello) => this.#cookies.issue(address, hello),
      check: (hello, cookie) => this.#cookies.check(address, hello, cookie),
    };
  }

  async #session(conn: FrameConnection, address: string, peer: string, slot: Slot): Promise<void> {
    const { log } = this.#opts;
    let user: string | undefined;
    let notices: string[] = [];
    let method: "password" | "ticket" | undefined;
    let session: ChatSession;
    try {
      const established = await serverHandshake(conn, {
        identity: this.#opts.identity,
        trust: this.#opts.trust,
        groups: this.#opts.groups,
        timeoutMs: this.#opts.handshakeTimeoutMs,
        admit: () => this.#admission.admitHandshake(address),
        keylog: this.#opts.keylog,
        cookies: this.#cookiesFor(address),
        authenticate: async (request, client) => {
          // The certificate is proven: this handshake no longer counts against the address.
          this.#admission.refundHandshake(address);
          user = request.username;
          method = request.mode === "resume" ? "ticket" : "password";
          const outcome = await this.#authenticate(request, client);
          notices = outcome.notices;
          return outcome;
        },
      });
      slot.established();
      this.#inHandshake.delete(conn);
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
      onPasswordChange: (oldPassword, newPassword) =>
        this.#changePassword(session, peer, oldPassword, newPassword),
    });
    await this.lobby.join(member, notices);
    // Validated against the CRL in force when its handshake began: one adopted since then
    // (whose sweep could not see this member yet) is applied now.
    if (this.#opts.trust.isRevoked(session.established.peer.serial)) this.#revoke(member);
    // Its handshake ran while the server certificate lapsed: closed like the others were.
    if (this.#retired) void session.close(this.#retired);
    const expiry = atDeadline(
      Math.min(session.established.peer.notAfter.getTime(), this.#opts.trust.ca.notAfter.getTime()),
      () => this.#expire(member),
    );
    const end = await running;
    expiry.cancel();
    this.lobby.leave(member);
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
   * The operator forgives a user's failed logins (every certificate of that user, and the
   * account) for every server on this store, or resets an address's handshake budget here:
   * the lockout ends now instead of when the window passes.
   * @returns how many failure counts were cleared (an address: 1)
   * @throws DB_UNAVAILABLE
   */
  async unlock(target: { user: string } | { address: string }): Promise<number> {
    if ("user" in target) {
      const cleared = await this.#throttle.unlock(canonicalName(target.user));
      this.#opts.log("UNLOCKED", {
        user: target.user,
        detail: `${cleared} failure counts cleared`,
      });
      return cleared;
    }
    this.#admission.resetHandshakes(target.address);
    this.#opts.log("UNLOCKED", { peer: target.address });
    return 1;
  }

  /**
   * Checks a password, a registration or a resumption ticket (bound to the certificate and the
   * account's credential epoch), throttled per certificate and per account (never per address:
   * the certificate has already authenticated the peer). The attempt is reserved before the
   * password is hashed, so concurrent guesses cannot all pass the lockout check; the next ticket
   * is issued when the server has an authority.
   */
  async #authenticate(
    request: Credentials,
    client: ValidatedPeer,
  ): Promise<{ registered: boolean; notices: string[]; ticket?: Uint8Array }> {
    const certFingerprint = client.fingerprint;
    const name = canonicalName(request.username);
    const attempt = await this.#throttle.begin({
      certificate: certFingerprint,
      user: name,
      // Only a password login guesses the account's secret; the rest count on the certificate.
      account: request.mode === "login" ? name : undefined,
    });
    let notices: string[] = [];
    let epoch: number;
    try {
      if (attempt.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, attempt.delayMs));
      if (request.mode === "register") {
        epoch = (await this.#opts.store.register(request)).credentialEpoch;
      } else if (request.mode === "resume") {
        if (!this.#opts.tickets) {
          throw new SecureChatError("AUTH_FAIL", "this server issues no resumption tickets");
        }
        const current = await this.#opts.store.credentialEpoch(request.username);
        await this.#opts.tickets.redeem(request.ticket, request.username, certFingerprint, current);
        epoch = current!; // redeem() refuses a ticket when there is no account
      } else {
        const account = await this.#opts.store.login(request.username, request.password);
        // The store finds a name in any case; a certificate opens only the account spelt as
        // its CN (a pre-issue-11 CA could issue ALICE beside alice).
        if (account.username !== request.username) {
          throw new SecureChatError("AUTH_FAIL", "certificate name is not the account's spelling");
        }
        notices = account.notices ?? [];
        epoch = account.credentialEpoch;
      }
    } catch (error) {
      await this.#decide(
        COUNTED_FAILURES.has(codeOf(error)) ? attempt.failed() : attempt.released(),
        request.username,
      );
      throw error;
    }
    await this.#decide(attempt.succeeded(), request.username);
    // No ticket (the ticket store is down) only costs the next login a password hash.
    const ticket = !request.wantTicket ? undefined : await this.#opts.tickets
      ?.issue(request.username, certFingerprint, epoch)
      .catch((error) =>
        void this.#opts.log(codeOf(error), {
          user: request.username,
          detail: `no resumption ticket issued: ${(error as Error).message}`,
        })
      );
    return { registered: request.mode === "register", notices, ...(ticket ? { ticket } : {}) };
  }

  /**
   * Records an attempt's outcome. The login itself is decided: a store that cannot record it
   * (down) is logged and the answer stands (a failure not recorded costs a lockout one count).
   */
  async #decide(recording: Promise<void>, user: string): Promise<void> {
    await recording.catch((error) =>
      this.#opts.log(codeOf(error), {
        user,
        detail: `login outcome not recorded: ${(error as Error).message}`,
      })
    );
  }

  /**
   * A user changes their own password from their session (PROTOCOL §6.7): the rules first
   * (no hash for a change that could never apply), then the old password, checked and
   * throttled exactly like a login of this certificate and account, then the change, which
   * retires every resumption ticket of the account on every node.
   * @throws INVALID_INPUT, RATE_LIMITED, AUTH_FAIL, DB_UNAVAILABLE: the refusal's code
   */
  async #changePassword(
    session: ChatSession,
    peer: string,
    oldPassword: string,
    newPassword: string,
  ): Promise<void> {
    const user = session.username;
    const where = { peer, user, session: session.sessionId };
    try {
      checkPasswordChange(oldPassword, newPassword);
      const name = canonicalName(user);
      const attempt = await this.#throttle.begin({
        certificate: session.established.peer.fingerprint,
        user: name,
        account: name,
      });
      try {
        if (attempt.delayMs > 0) {
          await new Promise((resolve) => setTimeout(resolve, attempt.delayMs));
        }
        await this.#opts.store.changePassword(user, oldPassword, newPassword);
      } catch (error) {
        await this.#decide(
          codeOf(error) === "AUTH_FAIL" ? attempt.failed() : attempt.released(),
          user,
        );
        throw error;
      }
      await this.#decide(attempt.succeeded(), user);
    } catch (error) {
      this.#opts.log(codeOf(error), {
        ...where,
        detail: `password change refused: ${(error as Error).message}`,
      });
      throw error;
    }
    this.#opts.log("PASSWORD_CHANGED", {
      ...where,
      detail: "by its user; the account's resumption tickets are retired",
    });
  }
}

/** Refusals that count against the certificate (and account): the rest decide nothing. */
const COUNTED_FAILURES = new Set(["AUTH_FAIL", "USER_EXISTS", "INVALID_INPUT"]);
