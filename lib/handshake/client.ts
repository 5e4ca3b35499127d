/**
 * The client side of the handshake (PROTOCOL §5), as the flat list of steps it is.
 * Each step expects exactly one message; anything else ends the handshake.
 *
 *   -> hello                          (plaintext, key share for phase 1)
 *   (<- retry, -> hello with cookie)  only when the server is under load (PROTOCOL §5.1)
 *   <- server_hello                   (plaintext, key share for phase 1)
 *   <- {certificate, certificate_verify, finished}   sealed, server
 *   -> {certificate, certificate_verify, finished}   sealed, client
 *   -> login | register               sealed, never in the transcript hash
 *   <- auth_ok
 *   -> dh_client, certificate_verify  sealed, phase 2
 *   <- dh_server, certificate_verify  sealed, phase 2
 */
import { toBase64 } from "../bytes.ts";
import { type ClientKeyShare, KEX_GROUPS, type KexGroup, keyAgreement } from "../crypto/kex.ts";
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
    await this.sendCredentials();
    await this.readAuthOk();
    const phase2 = await this.sendDhClient();
    return await this.readDhServer(phase2);
  }

  async sendHello(): Promise<void> {
    this.#group = this.#groups[0];
    this.#share = await this.#newShare();
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

  #newShare(): Promise<ClientKeyShare> {
    return keyAgreement(this.#group).generate(this.#random.keyShareSecret(this.#group));
  }

  /**
   * Under load the server answers the first hello with `retry` (PROTOCOL §5.1): the same
   * hello goes again with the cookie echoed, once. Only the hello that was answered is
   * hashed, so the cookie is bound into the handshake like the rest of the hello.
   */
  async readServerHello(): Promise<void> {
    let answer = await this.io.readPlainBytes(ServerHelloSchema.or(RetrySchema));
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
    await this.io.enterPhase1(await this.#share.complete(hello.key_share.pub));
  }

  async readServerCertificate(): Promise<void> {
    const { cert } = await this.io.readSealed(CertificateSchema);
    this.#server = await validatePeerCertificate(this.#opts.trust, cert, {
      role: "server",
      expectedName: this.#opts.serverName,
    });
  }

  async readServerCertificateVerify(): Promise<void> {
    await this.io.readCertificateVerify(1, this.#server.key);
  }

  async readServerFinished(): Promise<void> {
    await this.io.readFinished();
  }

  /** Only now, with the server proven, does the client reveal who it is. */
  async sendClientAuthentication(): Promise<void> {
    await this.io.sendAuthentication(this.#opts.identity);
  }

  async sendCredentials(): Promise<void> {
    const c = this.#opts.credentials;
    const message = c.mode === "register"
      ? { type: "register", email: c.email, username: c.username, password: c.password }
      : { type: "login", username: c.username, password: c.password };
    // Not recorded: nothing derived from the password is ever hashed or signed.
    await this.io.sendSealed(message, false);
  }

  async readAuthOk(): Promise<void> {
    const ok = await this.io.readSealed(AuthOkSchema);
    if (ok.username !== this.#opts.credentials.username) {
      throw new SecureChatError("PROTOCOL_ERROR", "server confirmed a different user name");
    }
    this.#username = ok.username;
  }

  async sendDhClient(): Promise<ClientKeyShare> {
    const share = await this.#newShare();
    await this.io.sendSealed({
      type: "dh_client",
      key_share: { group: this.#group, pub: toBase64(share.share) },
    });
    await this.io.sendCertificateVerify(2, this.#opts.identity.signingKey);
    this.io.peerSwitchedToControlKeys();
    return share;
  }

  async readDhServer(share: ClientKeyShare): Promise<EstablishedSession> {
    const dh = await this.io.readSealed(DhServerSchema);
    if (dh.key_share.group !== this.#group) {
      throw new SecureChatError("UNSUPPORTED", "phase 2 must use the phase 1 group");
    }
    await this.io.readCertificateVerify(2, this.#server.key);
    return await this.io.establish(await share.complete(dh.key_share.pub), {
      self: this.#opts.identity,
      peer: this.#server,
      username: this.#username,
      group: this.#group,
    });
  }
}
