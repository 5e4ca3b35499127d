/**
 * The client side of the handshake (PROTOCOL §5), as the flat list of steps it is.
 * Each step expects exactly one message; anything else ends the handshake.
 *
 *   -> hello                          (plaintext, key share for phase 1)
 *   (<- retry, -> hello with cookie)  only when the server is under load (PROTOCOL §5.1)
 *   <- server_hello                   (plaintext, time, key share for phase 1)
 *   <- certificate, certificate_verify, finished     sealed, server
 *   -> certificate, certificate_verify, finished     sealed, client
 *   -> login | register               sealed, never in the transcript hash
 *   <- auth_ok
 *   -> dh_client                      phase 2
 *   <- dh_server, finished            phase 2: s2c then reads under the app keys
 *   -> finished                       phase 2: c2s then writes under the app keys
 */
import { toBase64 } from "../bytes.ts";
import {
  type ClientKeyShare,
  KEX_GROUPS,
  type KexGroup,
  keyAgreement,
  phase2Group,
} from "../crypto/kex.ts";
import { SecureChatError } from "../errors.ts";
import { type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import type { FrameConnection } from "../wire/connection.ts";
import {
  AuthOkSchema,
  CertificateSchema,
  DhServerSchema,
  PROTOCOL_VERSION,
  RetrySchema,
  ServerHelloSchema,
} from "../wire/messages.ts";
import type { z } from "zod";
import {
  type Credentials,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_SKEW_MS,
  type EstablishedSession,
  HandshakeIo,
  type HandshakeOptions,
  type HandshakeRandomness,
  runHandshake,
  systemRandomness,
} from "./common.ts";

export type { Credentials };

export interface ClientHandshakeOptions extends HandshakeOptions {
  /** The name the user dialled; the server certificate must carry it as a SAN. */
  serverName: string;
  credentials: Credentials;
}

/**
 * Runs the client handshake to completion.
 * @throws BAD_CERT, SIG_FAIL, HANDSHAKE_FAIL, BAD_KEY_SHARE, UNSUPPORTED, AUTH_FAIL,
 *   USER_EXISTS, INVALID_INPUT, DB_UNAVAILABLE, RATE_LIMITED (the last five from the server),
 *   PROTOCOL_ERROR, TIMEOUT
 */
export function clientHandshake(
  conn: FrameConnection,
  options: ClientHandshakeOptions,
): Promise<EstablishedSession> {
  const hs = new ClientHandshake(conn, options);
  return runHandshake(hs.io, () => hs.run());
}

/** The server's answer to a hello (PROTOCOL §5, §5.1): made once, not per handshake. */
const ServerAnswerSchema = ServerHelloSchema.or(RetrySchema);

class ClientHandshake {
  readonly io: HandshakeIo;
  readonly #opts: ClientHandshakeOptions;
  readonly #random: HandshakeRandomness;
  readonly #groups: readonly KexGroup[];
  #share!: ClientKeyShare;
  #group!: KexGroup;
  #server!: ValidatedPeer;
  #username!: string;
  #hello!: Record<string, unknown>;
  #helloBytes!: Uint8Array;
  #ticket?: Uint8Array;
  #sessionTime!: number;

  constructor(conn: FrameConnection, options: ClientHandshakeOptions) {
    this.#opts = options;
    this.#random = options.randomness ?? systemRandomness;
    this.#groups = options.groups ?? KEX_GROUPS;
    this.io = new HandshakeIo("client", conn, options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  }

  async run(): Promise<EstablishedSession> {
    await this.sendHello();
    await this.readServerHello();
    await this.readServerCertificate();
    await this.readServerCertificateVerify();
    await this.readServerFinished();
    await this.sendClientAuthentication();
    this.sendCredentials();
    await this.readAuthOk();
    const phase2 = await this.sendDhClient();
    await this.readDhServer(phase2);
    const app = await this.readServerFinished2();
    return this.sendClientFinished2(app);
  }

  async sendHello(): Promise<void> {
    this.#group = this.#groups[0];
    this.#share = await this.#newShare(this.#group);
    this.#hello = {
      type: "hello",
      version: PROTOCOL_VERSION,
      nonce: toBase64(this.#random.nonce()),
      groups: [...this.#groups],
      key_share: { group: this.#group, pub: toBase64(this.#share.share) },
    };
    // Recorded once answered: a hello the server asks to repeat (retry) is not hashed.
    this.#helloBytes = this.io.sendPlain(this.#hello, false);
  }

  #newShare(group: KexGroup): Promise<ClientKeyShare> {
    return keyAgreement(group).generate(this.#random.keyShareSecret(group));
  }

  /**
   * Under load the server answers the first hello with `retry` (PROTOCOL §5.1): the same
   * hello goes again with the cookie echoed, once. Only the hello that was answered is
   * hashed, so the cookie is bound into the handshake like the rest of the hello.
   */
  async readServerHello(): Promise<void> {
    let answer = await this.io.readPlainBytes(ServerAnswerSchema);
    if (answer.message.type === "retry") {
      this.#hello = { ...this.#hello, cookie: toBase64(answer.message.cookie) };
      this.#helloBytes = this.io.sendPlain(this.#hello, false);
      answer = await this.io.readPlainBytes(ServerHelloSchema);
    }
    this.io.transcript.add(this.#helloBytes);
    this.io.transcript.add(answer.payload);
    const hello = answer.message as z.output<typeof ServerHelloSchema>;
    if (hello.version !== PROTOCOL_VERSION) {
      throw new SecureChatError("UNSUPPORTED", `server speaks protocol version ${hello.version}`);
    }
    if (hello.key_share.group !== this.#group) {
      throw new SecureChatError("UNSUPPORTED", "server answered with a group we did not offer");
    }
    const skew = this.#opts.maxSkewMs ?? DEFAULT_MAX_SKEW_MS;
    if (Math.abs(this.#random.now() - hello.time) > skew) {
      throw new SecureChatError("STALE", "server clock is outside the allowed skew of ours");
    }
    this.#sessionTime = hello.time;
    this.io.enterPhase1(await this.#share.complete(hello.key_share.pub));
  }

  async readServerCertificate(): Promise<void> {
    const { cert } = await this.io.readSealed(CertificateSchema);
    this.#server = await validatePeerCertificate(this.#opts.trust, cert, {
      role: "server",
      expectedName: this.#opts.serverName,
    });
  }

  async readServerCertificateVerify(): Promise<void> {
    await this.io.readCertificateVerify(this.#server.key);
  }

  async readServerFinished(): Promise<void> {
    await this.io.readFinished(1);
  }

  /** Only now, with the server proven, does the client reveal who it is. */
  async sendClientAuthentication(): Promise<void> {
    await this.io.sendAuthentication(this.#opts.identity);
  }

  sendCredentials(): void {
    const c = this.#opts.credentials;
    const message = {
      ...(c.mode === "register"
        ? { type: "register", email: c.email, username: c.username, password: c.password }
        : c.mode === "resume"
        ? { type: "resume", username: c.username, ticket: toBase64(c.ticket) }
        : { type: "login", username: c.username, password: c.password }),
      ...(c.wantTicket ? { tickets: true } : {}),
    };
    // Not hashed: nothing derived from the password is ever hashed or signed.
    this.io.sendSealed(message, false);
  }

  async readAuthOk(): Promise<void> {
    const ok = await this.io.readSealed(AuthOkSchema);
    if (ok.username !== this.#opts.credentials.username) {
      throw new SecureChatError("PROTOCOL_ERROR", "server confirmed a different user name");
    }
    this.#username = ok.username;
    this.#ticket = ok.ticket;
  }

  /** Phase 2's share is of the phase 1 group's phase 2 group (the hybrid's X25519, §4.2). */
  async sendDhClient(): Promise<ClientKeyShare> {
    const share = await this.#newShare(phase2Group(this.#group));
    this.io.sendSealed({
      type: "dh_client",
      key_share: { group: share.group, pub: toBase64(share.share) },
    });
    return share;
  }

  async readDhServer(share: ClientKeyShare): Promise<void> {
    const dh = await this.io.readSealed(DhServerSchema);
    if (dh.key_share.group !== share.group) {
      throw new SecureChatError("UNSUPPORTED", `phase 2 must use ${share.group}`);
    }
    this.io.enterPhase2(await share.complete(dh.key_share.pub));
  }

  /** The server's phase 2 Finished; then s2c reads under the application keys. */
  async readServerFinished2(): Promise<ReturnType<HandshakeIo["deriveSession"]>> {
    await this.io.readFinished(2);
    const app = this.io.deriveSession();
    this.io.records!.switchReceive(app.app.s2c);
    return app;
  }

  /** Our phase 2 Finished, still under the handshake key; then c2s writes under the app keys. */
  sendClientFinished2(app: ReturnType<HandshakeIo["deriveSession"]>): EstablishedSession {
    this.io.sendFinished(2);
    this.io.records!.switchSend(app.app.c2s);
    return this.io.established(app.sessionId, {
      sessionTime: this.#sessionTime,
      self: this.#opts.identity,
      peer: this.#server,
      username: this.#username,
      group: this.#group,
      ticket: this.#ticket,
    });
  }
}
