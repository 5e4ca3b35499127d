/**
 * The server side of the handshake (PROTOCOL §5), mirror of client.ts.
 *
 *   <- hello                          admit() runs here, before any expensive work
 *   (-> retry, <- hello with cookie)  only under load (PROTOCOL §5.1)
 *   -> server_hello                   (time, key share)
 *   -> certificate, certificate_verify, finished     sealed, server; one write with server_hello
 *   <- certificate, certificate_verify, finished     sealed, client
 *   <- login | register | resume               authenticate(): CN must equal the user name
 *   -> auth_ok
 *   <- dh_client                      phase 2
 *   -> dh_server, finished            phase 2: s2c then writes under the app keys
 *   <- finished                       phase 2: c2s then reads under the app keys
 */
import { toBase64, toHex } from "../bytes.ts";
import {
  KEX_GROUPS,
  type KexGroup,
  keyAgreement,
  phase2Group,
  type ServerKeyShare,
} from "../crypto/kex.ts";
import { SecureChatError } from "../errors.ts";
import { type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import { isReservedUserName } from "../pki/names.ts";
import type { FrameConnection } from "../wire/connection.ts";
import {
  CertificateSchema,
  DhClientSchema,
  HelloSchema,
  LoginSchema,
  PROTOCOL_VERSION,
  RegisterSchema,
  ResumeSchema,
} from "../wire/messages.ts";
import {
  type Credentials,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  type EstablishedSession,
  HandshakeIo,
  type HandshakeOptions,
  type HandshakeRandomness,
  runHandshake,
  systemRandomness,
} from "./common.ts";
import type { CookieHello } from "./cookie.ts";
import type { z } from "zod";

/** What the client proves the user with (PROTOCOL §5): made once, not per handshake. */
const CredentialsSchema = LoginSchema.or(RegisterSchema).or(ResumeSchema);

/** The server's stateless hello cookies (lib/handshake/cookie.ts), bound to this client's address. */
export interface HelloCookies {
  /** Whether a hello without a cookie must be answered with `retry` now (under load). */
  demanded(): boolean;
  issue(hello: CookieHello): Uint8Array;
  check(hello: CookieHello, cookie: Uint8Array): boolean;
}

export interface ServerHandshakeOptions extends HandshakeOptions {
  /** Without it no retry is ever sent, and a hello carrying a cookie is refused. */
  cookies?: HelloCookies;
  /** Called once a well-formed hello arrived, before any signature or key agreement: throw RATE_LIMITED to refuse. */
  admit?: () => void;
  /**
   * Checks the credentials of the user whose certificate is `peer`; the user name
   * already equals the certificate's CN. Throws AUTH_FAIL, USER_EXISTS, INVALID_INPUT,
   * DB_UNAVAILABLE or RATE_LIMITED.
   */
  /** Checks the credentials; `ticket` (DEPLOY.md §8) goes to the client in `auth_ok`. */
  authenticate: (
    request: Credentials,
    peer: ValidatedPeer,
  ) => Promise<{ registered: boolean; ticket?: Uint8Array }>;
  /**
   * `serve --keylog` (PROTOCOL §12.9): receives one line per transport secret, for auditors.
   * Absent by default; whoever holds these lines can decrypt the session's frames.
   */
  keylog?: (line: string) => void;
}

/**
 * Runs the server handshake to completion; on failure tells the client the code.
 * @throws BAD_CERT, SIG_FAIL, HANDSHAKE_FAIL, BAD_KEY_SHARE, UNSUPPORTED, AUTH_FAIL,
 *   USER_EXISTS, INVALID_INPUT, DB_UNAVAILABLE, RATE_LIMITED, PROTOCOL_ERROR, TIMEOUT
 */
export function serverHandshake(
  conn: FrameConnection,
  options: ServerHandshakeOptions,
): Promise<EstablishedSession> {
  const hs = new ServerHandshake(conn, options);
  return runHandshake(hs.io, () => hs.run());
}

class ServerHandshake {
  readonly io: HandshakeIo;
  readonly #opts: ServerHandshakeOptions;
  readonly #random: HandshakeRandomness;
  #group!: KexGroup;
  #client!: ValidatedPeer;
  #username!: string;
  #sessionTime!: number;

  constructor(conn: FrameConnection, options: ServerHandshakeOptions) {
    this.#opts = options;
    this.#random = options.randomness ?? systemRandomness;
    this.io = new HandshakeIo("server", conn, options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
  }

  async run(): Promise<EstablishedSession> {
    const clientShare = await this.readHello();
    // One flight, as TLS 1.3's server flight: one write once the signature is made.
    this.io.beginFlight();
    await this.sendServerHello(clientShare);
    await this.sendServerAuthentication();
    this.io.endFlight();
    await this.readClientCertificate();
    await this.readClientCertificateVerify();
    await this.readClientFinished();
    await this.readCredentials();
    const dhClientShare = await this.readDhClient();
    const app = await this.sendDhServer(dhClientShare);
    return await this.readClientFinished2(app);
  }

  async readHello(): Promise<Uint8Array> {
    let { message: hello, payload } = await this.io.readPlainBytes(HelloSchema);
    this.#checkHello(hello);
    const cookies = this.#opts.cookies;
    if (hello.cookie === undefined && cookies?.demanded()) {
      // Under load, no key agreement or signature until the client shows that it reads our
      // answers at its address (PROTOCOL §5.1); nothing is kept but the connection.
      this.io.sendPlain({ type: "retry", cookie: toBase64(cookies.issue(hello)) }, false);
      ({ message: hello, payload } = await this.io.readPlainBytes(HelloSchema));
      this.#checkHello(hello);
      if (hello.cookie === undefined) {
        throw new SecureChatError("PROTOCOL_ERROR", "the hello after a retry lacks the cookie");
      }
    }
    if (hello.cookie !== undefined && !cookies?.check(hello, hello.cookie)) {
      throw new SecureChatError("PROTOCOL_ERROR", "the hello cookie is invalid or expired");
    }
    // Only the hello that is answered is hashed: with its cookie, when it carries one.
    this.io.transcript.add(payload);
    this.#opts.admit?.();
    const keylog = this.#opts.keylog;
    if (keylog) {
      const nonce = toHex(hello.nonce);
      this.io.keylog = (label, secret) => keylog(`${label} ${nonce} ${toHex(secret)}`);
    }
    return hello.key_share.pub;
  }

  #checkHello(hello: z.output<typeof HelloSchema>): void {
    if (hello.version !== PROTOCOL_VERSION) {
      throw new SecureChatError(
        "UNSUPPORTED",
        `protocol version ${hello.version} is not supported`,
      );
    }
    const allowed = this.#opts.groups ?? KEX_GROUPS;
    const group = hello.key_share.group as KexGroup;
    // The share must be for a group the client itself listed and we allow; no
    // fallback round trip, so there is nothing for an attacker to steer.
    if (!hello.groups.includes(group) || !allowed.includes(group)) {
      throw new SecureChatError("UNSUPPORTED", "no acceptable key agreement group offered");
    }
    this.#group = group;
  }

  async sendServerHello(clientShare: Uint8Array): Promise<void> {
    const { share, sharedSecret } = await this.#respond(this.#group, clientShare);
    this.#sessionTime = this.#random.now();
    this.io.sendPlain({
      type: "server_hello",
      version: PROTOCOL_VERSION,
      nonce: toBase64(this.#random.nonce()),
      time: this.#sessionTime,
      key_share: { group: this.#group, pub: toBase64(share) },
    });
    this.io.enterPhase1(sharedSecret);
  }

  #respond(group: KexGroup, clientShare: Uint8Array): Promise<ServerKeyShare> {
    return keyAgreement(group).respond(clientShare, this.#random.keyShareSecret(group));
  }

  async sendServerAuthentication(): Promise<void> {
    await this.io.sendAuthentication(this.#opts.identity);
  }

  async readClientCertificate(): Promise<void> {
    const { cert } = await this.io.readSealed(CertificateSchema);
    // The user name is not known yet: it is matched against the CN at login.
    this.#client = await validatePeerCertificate(this.#opts.trust, cert, { role: "client" });
  }

  async readClientCertificateVerify(): Promise<void> {
    await this.io.readCertificateVerify(this.#client.key);
  }

  async readClientFinished(): Promise<void> {
    await this.io.readFinished(1);
  }

  async readCredentials(): Promise<void> {
    const request = await this.io.readSealed(CredentialsSchema, false);
    if (request.username !== this.#client.commonName) {
      throw new SecureChatError("AUTH_FAIL", "user name differs from the certificate's CN");
    }
    if (isReservedUserName(request.username)) {
      throw new SecureChatError("AUTH_FAIL", "that user name is reserved for the server");
    }
    const { tickets, ...fields } = request;
    const auth: Credentials = {
      ...(fields.type === "register"
        ? { mode: "register", ...fields }
        : fields.type === "resume"
        ? { mode: "resume", username: fields.username, ticket: fields.ticket }
        : { mode: "login", ...fields }),
      wantTicket: tickets === true,
    };
    const { registered, ticket } = await this.#opts.authenticate(auth, this.#client);
    this.#username = request.username;
    this.io.sendSealed({
      type: "auth_ok",
      username: this.#username,
      registered,
      ...(ticket ? { ticket: toBase64(ticket) } : {}),
    });
  }

  /** Phase 2's share is of the phase 1 group's phase 2 group (the hybrid's X25519, §4.2). */
  async readDhClient(): Promise<Uint8Array> {
    const dh = await this.io.readSealed(DhClientSchema);
    if (dh.key_share.group !== phase2Group(this.#group)) {
      throw new SecureChatError("UNSUPPORTED", `phase 2 must use ${phase2Group(this.#group)}`);
    }
    return dh.key_share.pub;
  }

  /** dh_server and our phase 2 Finished; then s2c writes under the application keys. */
  async sendDhServer(clientShare: Uint8Array): Promise<ReturnType<HandshakeIo["deriveSession"]>> {
    const group = phase2Group(this.#group);
    const { share, sharedSecret } = await this.#respond(group, clientShare);
    this.io.sendSealed({ type: "dh_server", key_share: { group, pub: toBase64(share) } });
    this.io.enterPhase2(sharedSecret);
    this.io.sendFinished(2);
    const app = this.io.deriveSession();
    this.io.records!.switchSend(app.app.s2c);
    return app;
  }

  /** The client's phase 2 Finished over Hfinal; then c2s reads under the application keys. */
  async readClientFinished2(
    app: ReturnType<HandshakeIo["deriveSession"]>,
  ): Promise<EstablishedSession> {
    await this.io.readFinished(2);
    this.io.records!.switchReceive(app.app.c2s);
    return this.io.established(app.sessionId, {
      sessionTime: this.#sessionTime,
      self: this.#opts.identity,
      peer: this.#client,
      username: this.#username,
      group: this.#group,
    });
  }
}
