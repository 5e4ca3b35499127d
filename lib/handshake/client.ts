/**
 * The client side of the handshake (PROTOCOL §5), as the flat list of steps it is.
 * Each step expects exactly one message; anything else ends the handshake.
 *
 *   -> hello                          (plaintext, key share for phase 1)
 *   <- server_hello                   (plaintext, key share for phase 1)
 *   <- {certificate, certificate_verify, finished}   sealed, server
 *   -> {certificate, certificate_verify, finished}   sealed, client
 *   -> login | register               sealed, never in the transcript hash
 *   <- auth_ok
 *   -> dh_client, certificate_verify  sealed, phase 2
 *   <- dh_server, certificate_verify  sealed, phase 2
 */
import { toBase64, toHex, wipe } from "../bytes.ts";
import { agree, KEX_GROUPS, type KexGroup, type KeyShare } from "../crypto/kex.ts";
import type { VerifyingKey } from "../crypto/signature.ts";
import { SecureChatError } from "../errors.ts";
import { type TrustStore, type ValidatedPeer, validatePeerCertificate } from "../pki/validate.ts";
import type { FrameConnection } from "../wire/connection.ts";
import {
  AuthOkSchema,
  CertificateSchema,
  DhServerSchema,
  PROTOCOL_VERSION,
  ServerHelloSchema,
} from "../wire/messages.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  type EstablishedSession,
  HandshakeIo,
  type HandshakeRandomness,
  type Identity,
  isFromPeer,
  systemRandomness,
} from "./common.ts";
import { derivePhase1, deriveSession, type Phase1Secrets } from "./key_schedule.ts";
import { SealedChannel } from "./record.ts";

export type Credentials =
  | { mode: "login"; username: string; password: string }
  | { mode: "register"; username: string; password: string; email: string };

export interface ClientHandshakeOptions {
  identity: Identity;
  trust: TrustStore;
  /** The name the user dialled; the server certificate must carry it as a SAN. */
  serverName: string;
  credentials: Credentials;
  groups?: readonly KexGroup[];
  timeoutMs?: number;
  randomness?: HandshakeRandomness;
}

/**
 * Runs the client handshake to completion.
 * @throws BAD_CERT, SIG_FAIL, HANDSHAKE_FAIL, BAD_KEY_SHARE, UNSUPPORTED, AUTH_FAIL,
 *   USER_EXISTS, INVALID_INPUT, DB_UNAVAILABLE, RATE_LIMITED (the last five from the server),
 *   PROTOCOL_ERROR, TIMEOUT
 */
export async function clientHandshake(
  conn: FrameConnection,
  options: ClientHandshakeOptions,
): Promise<EstablishedSession> {
  const hs = new ClientHandshake(conn, options);
  try {
    return await hs.run();
  } catch (error) {
    if (error instanceof SecureChatError && !isFromPeer(error)) await hs.io.sendError(error);
    throw error;
  } finally {
    hs.wipe();
  }
}

class ClientHandshake {
  readonly io: HandshakeIo;
  readonly #opts: ClientHandshakeOptions;
  readonly #random: HandshakeRandomness;
  readonly #groups: readonly KexGroup[];
  #share!: KeyShare;
  #group!: KexGroup;
  #phase1!: Phase1Secrets;
  #server!: ValidatedPeer;
  #serverKey!: VerifyingKey;
  #username!: string;

  constructor(conn: FrameConnection, options: ClientHandshakeOptions) {
    this.#opts = options;
    this.#random = options.randomness ?? systemRandomness;
    this.#groups = options.groups ?? KEX_GROUPS;
    this.io = new HandshakeIo(conn, options.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS);
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
    this.#share = await this.#random.keyShare(this.#group);
    this.io.sendPlain({
      type: "hello",
      version: PROTOCOL_VERSION,
      nonce: toBase64(this.#random.nonce()),
      groups: [...this.#groups],
      key_share: { group: this.#group, pub: toBase64(this.#share.publicKey) },
    });
  }

  async readServerHello(): Promise<void> {
    const hello = await this.io.readPlain(ServerHelloSchema);
    if (hello.version !== PROTOCOL_VERSION) {
      throw new SecureChatError("UNSUPPORTED", `server speaks protocol version ${hello.version}`);
    }
    if (hello.key_share.group !== this.#group) {
      throw new SecureChatError("UNSUPPORTED", "server answered with a group we did not offer");
    }
    const shared = await agree(this.#share, hello.key_share.pub);
    try {
      this.#phase1 = await derivePhase1(shared, await this.io.transcript.hash());
    } finally {
      wipe(shared);
    }
    this.io.sealed = await SealedChannel.create(this.#phase1.c2s, this.#phase1.s2c);
  }

  async readServerCertificate(): Promise<void> {
    const { cert } = await this.io.readSealed(CertificateSchema);
    this.#server = await validatePeerCertificate(this.#opts.trust, cert, {
      role: "server",
      expectedName: this.#opts.serverName,
    });
    this.#serverKey = this.#server.key;
  }

  async readServerCertificateVerify(): Promise<void> {
    await this.io.readCertificateVerify("server", 1, this.#serverKey);
  }

  async readServerFinished(): Promise<void> {
    await this.io.readFinished("server", this.#phase1.serverFinishedKey);
  }

  /** Only now, with the server proven, does the client reveal who it is. */
  async sendClientAuthentication(): Promise<void> {
    await this.io.sendAuthentication("client", this.#opts.identity, this.#phase1.clientFinishedKey);
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

  async sendDhClient(): Promise<KeyShare> {
    const share = await this.#random.keyShare(this.#group);
    await this.io.sendSealed({
      type: "dh_client",
      key_share: { group: this.#group, pub: toBase64(share.publicKey) },
    });
    await this.io.sendCertificateVerify("client", 2, this.#opts.identity.signingKey);
    return share;
  }

  async readDhServer(share: KeyShare): Promise<EstablishedSession> {
    const dh = await this.io.readSealed(DhServerSchema);
    if (dh.key_share.group !== this.#group) {
      throw new SecureChatError("UNSUPPORTED", "phase 2 must use the phase 1 group");
    }
    await this.io.readCertificateVerify("server", 2, this.#serverKey);
    const shared = await agree(share, dh.key_share.pub);
    try {
      const secrets = await deriveSession(
        this.#phase1.handshakeSecret,
        shared,
        await this.io.transcript.hash(),
      );
      return {
        role: "client",
        conn: this.io.conn,
        control: await SealedChannel.create(secrets.control.c2s, secrets.control.s2c),
        sessionId: toHex(secrets.sessionId),
        chatSendSecret: secrets.chat.c2s,
        chatReceiveSecret: secrets.chat.s2c,
        self: this.#opts.identity,
        peer: this.#server,
        peerKey: this.#serverKey,
        username: this.#username,
        group: this.#group,
      };
    } finally {
      wipe(shared);
    }
  }

  wipe(): void {
    if (this.#phase1) {
      wipe(
        this.#phase1.handshakeSecret,
        this.#phase1.clientFinishedKey,
        this.#phase1.serverFinishedKey,
      );
    }
  }
}
