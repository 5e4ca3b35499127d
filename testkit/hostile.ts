/**
 * A hostile client (issue 8): speaks the wire protocol (PROTOCOL §2–§6) from the lib/
 * building blocks, and can misbehave at any step. The honest client steps are
 * re-implemented here one method per step, each with hooks to change what it sends,
 * so a test can say "do a real handshake up to step N, then send X":
 *
 *   const h = await HostileClient.connect(port, { identity, trust, username, password });
 *   await h.upTo("certificate_verify");          // hello … client certificate, honestly
 *   await h.sendCertificateVerify({ sig: new Uint8Array(10) });
 *   const end = await h.expectEnd();             // the server's error code, if it sent one
 *
 * Below that, `RawConn` writes arbitrary bytes (split, truncated, with any length prefix).
 */
import assert from "node:assert/strict";
import { concat, fromBase64, toBase64, toHex, u32be, utf8 } from "../lib/bytes.ts";
import {
  type ClientKeyShare,
  type KexGroup,
  keyAgreement,
  phase2Group,
} from "../lib/crypto/kex.ts";
import {
  importVerifyingKeySpki,
  sign,
  verify,
  type VerifyingKey,
} from "../lib/crypto/signature.ts";
import type { Identity } from "../lib/handshake/common.ts";
import {
  deriveMaster,
  derivePhase1,
  deriveSession,
  finishedMac,
  HandshakeTranscript,
  type MasterSecrets,
  type Phase1Secrets,
  signatureInput,
} from "../lib/handshake/key_schedule.ts";
import { RecordLayer } from "../lib/handshake/record.ts";
import { readRelay } from "../lib/message/relay_wire.ts";
import {
  type Body,
  decodeRecord,
  encodeRecord,
  groupProof,
  LOBBY,
  type MessageRecord,
  openContent,
  sealContent,
  sealPlaintext,
  signBatch,
} from "../lib/message/record.ts";
import { type TrustStore, validatePeerCertificate } from "../lib/pki/validate.ts";
import {
  AuthOkSchema,
  CertificateSchema,
  CertificateVerifySchema,
  DhServerSchema,
  FinishedSchema,
  parseMessage,
  PROTOCOL_VERSION,
  RetrySchema,
  ServerHelloSchema,
} from "../lib/wire/messages.ts";
import type { Bystander, LogEvent, ServerProcess } from "./server_process.ts";

/**
 * A session message's content as a client reads it: a relay, binary on the wire (PROTOCOL §6.4
 * "A relay on the wire"), as its JSON form; any other message as its JSON.
 */
// deno-lint-ignore no-explicit-any
function contentMessage(content: Uint8Array): any {
  if (content[0] === 0x02) return readRelay(content);
  return JSON.parse(new TextDecoder().decode(content));
}

export const encoder = new TextEncoder();

/** JSON text of a message as UTF-8 bytes. */
export function json(message: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(message));
}

/** u32be(length) || payload, with any length the test wants. */
export function frame(payload: Uint8Array, length = payload.length): Uint8Array {
  return concat(u32be(length), payload);
}

/** X25519 u-coordinates that are low-order (or reduce to one) under RFC 7748 decoding. */
export const X25519_LOW_ORDER: Record<string, string> = {
  "u=0": "00".repeat(32),
  "u=1": "01" + "00".repeat(31),
  "order 8 (e0eb7a7c...)": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "order 8 (5f9c95bc...)": "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "u=p-1 (order 2)": "ec" + "ff".repeat(30) + "7f",
  "u=p (non-canonical 0)": "ed" + "ff".repeat(30) + "7f",
  "u=p+1 (non-canonical 1)": "ee" + "ff".repeat(30) + "7f",
  "u=0 with the masked top bit set": "00".repeat(31) + "80",
};

/** A connection that writes anything and reads frames with a deadline. */
export class RawConn {
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buffer: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #eof = false;
  #pendingRead?: Promise<ReadableStreamReadResult<Uint8Array>>;

  private constructor(readonly tcp: Deno.TcpConn) {
    this.#reader = tcp.readable.getReader();
  }

  static async open(port: number, hostname = "127.0.0.1"): Promise<RawConn> {
    const tcp = await Deno.connect({ hostname, port });
    tcp.setNoDelay(true);
    return new RawConn(tcp);
  }

  /** Every chunk written, in order (a test can resend one verbatim). */
  readonly sent: Uint8Array[] = [];

  async write(bytes: Uint8Array): Promise<void> {
    this.sent.push(bytes.slice());
    let offset = 0;
    while (offset < bytes.length) offset += await this.tcp.write(bytes.subarray(offset));
  }

  /** Writes `bytes` in pieces of `size` bytes, pausing `delayMs` between them. */
  async writeSplit(bytes: Uint8Array, size = 1, delayMs = 0): Promise<void> {
    for (let i = 0; i < bytes.length; i += size) {
      await this.write(bytes.subarray(i, i + size));
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }

  /** One well-formed frame around `payload` (bytes, or any value sent as JSON). */
  async sendFrame(payload: Uint8Array | object | string): Promise<void> {
    await this.write(frame(toPayload(payload)));
  }

  async #more(deadline: number): Promise<boolean> {
    if (this.#eof) return false;
    this.#pendingRead ??= this.#reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()));
    });
    let result: ReadableStreamReadResult<Uint8Array> | "timeout";
    try {
      result = await Promise.race([this.#pendingRead, timeout]);
    } catch {
      result = { done: true, value: undefined };
    } finally {
      clearTimeout(timer);
    }
    if (result === "timeout") throw new Error("read timed out");
    this.#pendingRead = undefined;
    if (result.done) {
      this.#eof = true;
      return false;
    }
    this.#buffer = concat(this.#buffer, result.value) as Uint8Array<ArrayBuffer>;
    return true;
  }

  /** The next frame's payload; null when the peer closed the connection. */
  async readFrame(timeoutMs = 10_000): Promise<Uint8Array | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffer.length < 4) if (!await this.#more(deadline)) return null;
    const length = new DataView(this.#buffer.buffer, this.#buffer.byteOffset, 4).getUint32(0);
    while (this.#buffer.length < 4 + length) if (!await this.#more(deadline)) return null;
    const payload = this.#buffer.slice(4, 4 + length);
    this.#buffer = this.#buffer.slice(4 + length);
    return payload;
  }

  /** True once the peer has closed (reading and discarding whatever else arrives). */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    try {
      while (await this.#more(deadline)) this.#buffer = new Uint8Array(0);
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    try {
      this.tcp.close();
    } catch {
      // already closed
    }
  }
}

function toPayload(payload: Uint8Array | object | string): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  if (typeof payload === "string") return utf8(payload);
  return json(payload);
}

/** The honest client's handshake steps, in order (PROTOCOL §5, client side). */
export const STEPS = [
  "hello",
  "server_hello",
  "server_flight",
  "certificate",
  "certificate_verify",
  "finished",
  "credentials",
  "auth_ok",
  "dh_client",
  "dh_server",
  "finished2",
] as const;
export type Step = typeof STEPS[number];

export interface HostileOptions {
  identity: Identity;
  trust: TrustStore;
  username: string;
  password: string;
  /** Register instead of logging in. */
  email?: string;
  group?: KexGroup;
  serverName?: string;
}

/** A message override: replace the message, or edit the honest one. */
export interface SendHooks {
  /** Send these exact inner bytes instead (not added to the transcript). */
  payload?: Uint8Array;
  /** Edit the honest message before it is sent (and recorded). */
  mutate?: (message: Record<string, unknown>) => unknown;
}

/** What the server said before it closed. */
export interface EndOfConnection {
  /** The code of the server's `error` message (plain or sealed), if one arrived. */
  code?: string;
  closed: boolean;
  /** Every message read, decoded where possible (sealed ones as their inner JSON). */
  messages: unknown[];
}

export class HostileClient {
  readonly transcript = new HandshakeTranscript();
  /** The record layer in use: handshake keys, then (per direction) the application keys. */
  records?: RecordLayer;
  share?: ClientKeyShare;
  phase1?: Phase1Secrets;
  master?: MasterSecrets;
  app?: { c2s: Uint8Array; s2c: Uint8Array };
  serverKey?: VerifyingKey;
  sessionId?: string;
  sessionTime?: number;
  #dhShare?: ClientKeyShare;
  /** The hello sent, hashed once the server answers it with server_hello. */
  #hello?: { message: unknown; payload: Uint8Array };
  #done = new Set<Step>();
  #seqno = 0;
  readonly group: KexGroup;

  constructor(readonly conn: RawConn, readonly opts: HostileOptions) {
    this.group = opts.group ?? "x25519";
  }

  static async connect(port: number, opts: HostileOptions): Promise<HostileClient> {
    return new HostileClient(await RawConn.open(port), opts);
  }

  /** Runs every honest step before `step` that has not run yet. */
  async upTo(step: Step): Promise<void> {
    for (const s of STEPS.slice(0, STEPS.indexOf(step))) {
      if (!this.#done.has(s)) await this.step(s);
    }
  }

  /** Runs the whole honest handshake. */
  async handshake(): Promise<void> {
    await this.upTo("finished2");
    await this.step("finished2");
  }

  /** Runs one honest step. */
  async step(step: Step): Promise<void> {
    switch (step) {
      case "hello":
        return await this.sendHello();
      case "server_hello":
        return await this.readServerHello();
      case "server_flight":
        return await this.readServerFlight();
      case "certificate":
        return await this.sendCertificate();
      case "certificate_verify":
        return await this.sendCertificateVerify();
      case "finished":
        return await this.sendFinished();
      case "credentials":
        return await this.sendCredentials();
      case "auth_ok":
        return await this.readAuthOk();
      case "dh_client":
        return await this.sendDhClient();
      case "dh_server":
        return await this.readDhServer();
      case "finished2":
        return await this.sendFinished2();
    }
  }

  // ---- plaintext and sealed primitives ----

  /** Sends a plaintext frame; a JSON message is recorded in the handshake transcript. */
  async sendPlain(message: unknown, record = true): Promise<void> {
    const payload = json(message);
    await this.conn.sendFrame(payload);
    if (record) this.transcript.add(payload);
  }

  /** Seals `inner` (content bytes or a JSON message) as one record and sends it. */
  async sendSealed(inner: Uint8Array | object, record = false): Promise<void> {
    const bytes = inner instanceof Uint8Array ? inner : json(inner);
    await this.conn.sendFrame(this.#records().seal(bytes));
    if (record) this.transcript.add(bytes);
  }

  async #sendHandshake(message: Record<string, unknown>, hooks: SendHooks = {}, record = true) {
    if (hooks.payload) return await this.sendSealed(hooks.payload, false);
    const edited = hooks.mutate ? hooks.mutate(structuredClone(message)) : message;
    await this.sendSealed(json(edited), record);
  }

  /** Contents of a record already opened, not read yet (a record may hold several, §3.2). */
  #unread: Uint8Array[] = [];

  /** The next message's content: the rest of the last record, else the next record's. */
  async readRecord(timeoutMs = 10_000): Promise<Uint8Array> {
    if (this.#unread.length === 0) {
      const payload = await this.conn.readFrame(timeoutMs);
      if (payload === null) throw new Error("server closed the connection");
      this.#unread = this.#records().openContents(payload);
    }
    const content = this.#unread.shift()!;
    const message = contentMessage(content);
    if (message.type === "error") throw new Error(`server error ${message.code}`);
    return content;
  }

  #records(): RecordLayer {
    if (!this.records) throw new Error("no record keys yet");
    return this.records;
  }

  // ---- the steps ----

  async sendHello(o: {
    version?: unknown;
    groups?: unknown;
    keyShare?: { group: string; pub: string };
    nonce?: string;
    mutate?: (m: Record<string, unknown>) => unknown;
    /** Send it one byte per write. */
    split?: boolean;
  } = {}): Promise<void> {
    this.#done.add("hello");
    this.share = await keyAgreement(this.group).generate();
    let message: unknown = {
      type: "hello",
      version: o.version ?? PROTOCOL_VERSION,
      nonce: o.nonce ?? toBase64(crypto.getRandomValues(new Uint8Array(32))),
      groups: o.groups ?? [this.group],
      key_share: o.keyShare ?? { group: this.group, pub: toBase64(this.share.share) },
    };
    if (o.mutate) message = o.mutate(message as Record<string, unknown>);
    const payload = json(message);
    if (o.split) await this.conn.writeSplit(frame(payload));
    else await this.conn.sendFrame(payload);
    this.#hello = { message, payload };
  }

  /** As the honest client: a `retry` (PROTOCOL §5.1) gets the same hello with its cookie. */
  async readServerHello(): Promise<void> {
    this.#done.add("server_hello");
    let payload = await this.conn.readFrame();
    if (payload === null) throw new Error("server closed before server_hello");
    const retry = RetrySchema.safeParse(JSON.parse(new TextDecoder().decode(payload)));
    if (retry.success) {
      const message = { ...this.#hello!.message as object, cookie: toBase64(retry.data.cookie) };
      this.#hello = { message, payload: json(message) };
      await this.conn.sendFrame(this.#hello.payload);
      payload = await this.conn.readFrame();
      if (payload === null) throw new Error("server closed before server_hello");
    }
    const hello = parseMessage(payload, ServerHelloSchema);
    this.transcript.add(this.#hello!.payload);
    this.transcript.add(payload);
    this.sessionTime = hello.time;
    const shared = await this.share!.complete(hello.key_share.pub);
    this.phase1 = derivePhase1(shared, this.transcript.hash());
    this.records = new RecordLayer(this.phase1.c2s, this.phase1.s2c);
  }

  /** Reads and checks the server's certificate, certificate_verify and finished. */
  async readServerFlight(): Promise<void> {
    this.#done.add("server_flight");
    const certInner = await this.readRecord();
    const { cert } = parseMessage(certInner, CertificateSchema);
    this.transcript.add(certInner);
    const server = await validatePeerCertificate(this.opts.trust, cert, {
      role: "server",
      expectedName: this.opts.serverName ?? "localhost",
    });
    this.serverKey = await importVerifyingKeySpki(server.spki);
    const signed = signatureInput("server", this.transcript.hash());
    const cvInner = await this.readRecord();
    const { sig } = parseMessage(cvInner, CertificateVerifySchema);
    this.transcript.add(cvInner);
    if (!await verify(this.serverKey, signed, sig)) throw new Error("server signature invalid");
    const expected = finishedMac(this.phase1!.serverFinishedKey, this.transcript.hash());
    const finInner = await this.readRecord();
    const { mac } = parseMessage(finInner, FinishedSchema);
    this.transcript.add(finInner);
    if (toBase64(mac) !== toBase64(expected)) throw new Error("server finished invalid");
  }

  async sendCertificate(o: SendHooks & { cert?: Uint8Array } = {}): Promise<void> {
    this.#done.add("certificate");
    const cert = o.cert ?? this.opts.identity.certDer;
    await this.#sendHandshake({ type: "certificate", cert: toBase64(cert) }, o);
  }

  async sendCertificateVerify(o: SendHooks & { sig?: Uint8Array } = {}): Promise<void> {
    this.#done.add("certificate_verify");
    const signed = signatureInput("client", this.transcript.hash());
    const sig = o.sig ?? await sign(this.opts.identity.signingKey, signed);
    await this.#sendHandshake({ type: "certificate_verify", sig: toBase64(sig) }, o);
  }

  async sendFinished(o: SendHooks & { mac?: Uint8Array } = {}): Promise<void> {
    this.#done.add("finished");
    const mac = o.mac ?? finishedMac(this.phase1!.clientFinishedKey, this.transcript.hash());
    await this.#sendHandshake({ type: "finished", mac: toBase64(mac) }, o);
  }

  async sendCredentials(o: SendHooks = {}): Promise<void> {
    this.#done.add("credentials");
    const { username, password, email } = this.opts;
    const message = email === undefined
      ? { type: "login", username, password }
      : { type: "register", email, username, password };
    await this.#sendHandshake(message, o, false);
  }

  async readAuthOk(): Promise<void> {
    this.#done.add("auth_ok");
    const inner = await this.readRecord();
    parseMessage(inner, AuthOkSchema);
    this.transcript.add(inner);
  }

  async sendDhClient(o: SendHooks & { pub?: Uint8Array; group?: string } = {}): Promise<void> {
    this.#done.add("dh_client");
    this.#dhShare = await keyAgreement(phase2Group(this.group)).generate();
    await this.#sendHandshake({
      type: "dh_client",
      key_share: {
        group: o.group ?? this.#dhShare.group,
        pub: toBase64(o.pub ?? this.#dhShare.share),
      },
    }, o);
  }

  /** dh_server and the server's phase 2 Finished; then s2c reads under the app keys. */
  async readDhServer(): Promise<void> {
    this.#done.add("dh_server");
    const dhInner = await this.readRecord();
    const dh = parseMessage(dhInner, DhServerSchema);
    this.transcript.add(dhInner);
    this.master = deriveMaster(
      this.phase1!.handshakeSecret,
      await this.#dhShare!.complete(dh.key_share.pub),
    );
    const expected = finishedMac(this.master.serverFinishedKey, this.transcript.hash());
    const finInner = await this.readRecord();
    const { mac } = parseMessage(finInner, FinishedSchema);
    this.transcript.add(finInner);
    if (toBase64(mac) !== toBase64(expected)) throw new Error("server phase 2 finished invalid");
    const session = deriveSession(this.master.master, this.transcript.hash());
    this.sessionId = toHex(session.sessionId);
    this.app = session.app;
    this.records!.switchReceive(session.app.s2c);
  }

  /** Our phase 2 Finished under the handshake key; then c2s writes under the app keys. */
  async sendFinished2(o: SendHooks & { mac?: Uint8Array } = {}): Promise<void> {
    this.#done.add("finished2");
    const mac = o.mac ?? finishedMac(this.master!.clientFinishedKey, this.transcript.hash());
    await this.#sendHandshake({ type: "finished", mac: toBase64(mac) }, o);
    this.records!.switchSend(this.app!.c2s);
  }

  // ---- chat (PROTOCOL §6) ----

  /**
   * Makes and signs one record as §6.1 says, then lets the test change any part:
   * `record` edits the record before signing (sid, dir, to, seqno, ts), `after` edits
   * it after signing (a tampered record: its `sig` and `batch` make the msg's, userMsgJson),
   * `message` edits the `msg` JSON itself, and `k` replaces the content key sent. The honest
   * seqno counter advances only when the seqno is not overridden.
   */
  async msgContent(body: Body | Uint8Array, o: {
    to?: string;
    record?: (r: MessageRecord) => void;
    after?: (r: MessageRecord) => void;
    k?: (k: Uint8Array) => Uint8Array;
    message?: (m: Record<string, unknown>) => unknown;
  } = {}): Promise<Uint8Array> {
    if (!this.sessionId) throw new Error("handshake not complete");
    const { k, ct, c } = body instanceof Uint8Array ? sealPlaintext(body) : sealContent(body);
    const record: MessageRecord = {
      sid: this.sessionId,
      dir: "c2s",
      to: o.to ?? LOBBY,
      seqno: this.#seqno + 1,
      ts: Date.now(),
      ct,
      c,
    };
    o.record?.(record);
    if (record.seqno === this.#seqno + 1) this.#seqno++;
    await signBatch(this.opts.identity.signingKey, [record]);
    o.after?.(record);
    let message: unknown = userMsgJson([record], [o.k ? o.k(k) : k]);
    if (o.message) message = o.message(message as Record<string, unknown>);
    return json(message);
  }

  async sendMsg(body: Body | Uint8Array, o: Parameters<HostileClient["msgContent"]>[1] = {}) {
    await this.sendSealed(await this.msgContent(body, o));
  }

  /**
   * Makes one record per body with the next seqnos, signs them as one batch (PROTOCOL §6.1),
   * lets `after` edit the signed records (a tampered batch), and sends them in one `msg`
   * (PROTOCOL §6.3), or with `each` each in a `msg` of its own (its proof from its path), in
   * order; `message` edits each msg's JSON (`j` its first record's place in the batch); `to`
   * addresses record `j` (the lobby by default).
   */
  async sendBatch(
    bodies: Body[],
    after?: (records: MessageRecord[]) => void,
    o: {
      each?: boolean;
      message?: (m: Record<string, unknown>, j: number) => unknown;
      to?: (j: number) => string;
    } = {},
  ): Promise<void> {
    if (!this.sessionId) throw new Error("handshake not complete");
    const made = bodies.map((body, j) => {
      const { k, ct, c } = sealContent(body);
      const record: MessageRecord = {
        sid: this.sessionId!,
        dir: "c2s",
        to: o.to?.(j) ?? LOBBY,
        seqno: ++this.#seqno,
        ts: Date.now(),
        ct,
        c,
      };
      return { record, k };
    });
    const records = made.map((m) => m.record);
    await signBatch(this.opts.identity.signingKey, records);
    after?.(records);
    const groups = o.each ? made.map((m) => [m]) : [made];
    let j = 0;
    for (const group of groups) {
      let message: unknown = userMsgJson(group.map((m) => m.record), group.map((m) => m.k));
      if (o.message) message = o.message(message as Record<string, unknown>, j);
      j += group.length;
      await this.sendSealed(json(message));
    }
  }

  /** Reads records until a `msg` whose body matches `test` arrives; returns its body. */
  async readMsgUntil(test: (body: Body) => boolean, timeoutMs = 10_000): Promise<Body> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const content = await this.readRecord(Math.max(1, deadline - Date.now()));
      const m = contentMessage(content);
      if (m.type === "key_update") {
        this.records!.updateReceive();
        continue;
      }
      if (m.type !== "msg" && m.type !== "relay") continue;
      const body = openContent(decodeRecord(m.record), fromBase64(m.k));
      if (test(body)) return body;
    }
  }

  /**
   * Reads what is left until the server closes (or `timeoutMs`), opening records
   * with the current keys, and reports the code of the server's `error`.
   */
  async expectEnd(timeoutMs = 10_000): Promise<EndOfConnection> {
    const deadline = Date.now() + timeoutMs;
    const messages: unknown[] = [];
    let code: string | undefined;
    let sealed = this.records !== undefined;
    while (true) {
      let payload: Uint8Array | null;
      try {
        payload = await this.conn.readFrame(Math.max(1, deadline - Date.now()));
      } catch {
        this.conn.close();
        return { code, closed: false, messages };
      }
      if (payload === null) {
        this.conn.close();
        return { code, closed: true, messages };
      }
      let message: Record<string, unknown> | undefined;
      if (sealed) {
        try {
          const contents = this.records!.openContents(payload);
          const decoded = contents.map(contentMessage);
          messages.push(...decoded.slice(0, -1));
          message = decoded.at(-1);
        } catch {
          sealed = false; // not under our keys (e.g. we never read the server's flight)
        }
      }
      if (!message) {
        try {
          message = JSON.parse(new TextDecoder().decode(payload));
        } catch {
          messages.push(payload);
          continue;
        }
      }
      messages.push(message);
      if (message!.type === "error") code = message!.code as string;
    }
  }

  close(): void {
    this.conn.close();
  }
}

// ---- asserting what the server logged for one hostile connection ----

/** The server log's `peer` for this connection. */
export function peerOf(conn: RawConn): string {
  const addr = conn.tcp.localAddr as Deno.NetAddr;
  return `${addr.hostname}:${addr.port}`;
}

const NOT_A_CODE = new Set(["CONNECT", "LOGIN", "CLOSE", "SESSION_REPLACED"]);

/**
 * The first code (not CONNECT/LOGIN/CLOSE) the server logged for `conn` at or after
 * log index `from`.
 */
export function serverCodeFor(
  server: ServerProcess,
  conn: RawConn,
  from = 0,
  timeoutMs = 10_000,
): Promise<LogEvent> {
  const peer = peerOf(conn);
  return server.waitFor((e) => e.peer === peer && !NOT_A_CODE.has(e.event), timeoutMs, from);
}

/** Asserts the server logged `code` for `conn` and closed it; returns what the client read. */
export async function expectRefused(
  server: ServerProcess,
  client: HostileClient,
  code: string,
  from: number,
  o: { detail?: RegExp; clientSees?: string | null } = {},
): Promise<EndOfConnection> {
  const logged = await serverCodeFor(server, client.conn, from);
  assert.equal(logged.event, code, `server logged ${JSON.stringify(logged)}`);
  if (o.detail) assert.match(String(logged.detail), o.detail);
  const end = await client.expectEnd();
  assert.ok(end.closed, "the server did not close the connection");
  if (o.clientSees !== null) {
    assert.equal(end.code, o.clientSees ?? code, `client read ${JSON.stringify(end.messages)}`);
  }
  return end;
}

/** One row of a refusal table: what the hostile client does, and the code it earns. */
export interface RefusalCase {
  name: string;
  code: string;
  run(h: HostileClient): Promise<void>;
  /** What the log's detail should say, to show the refusal has the right reason. */
  detail?: RegExp;
  /** The code the client reads in the server's error frame (default: `code`; null: none). */
  clientSees?: string | null;
}

/**
 * Runs the table as steps, one hostile connection (from `connect`) per case, with an
 * honest `bystander` logged in throughout and closing cleanly at the end.
 */
export async function runRefusalTable(
  t: Deno.TestContext,
  server: ServerProcess,
  connect: () => Promise<HostileClient>,
  bystander: () => Promise<Bystander>,
  cases: RefusalCase[],
): Promise<void> {
  const bob = await bystander();
  try {
    for (const c of cases) {
      await t.step(`${c.name} → ${c.code}`, async () => {
        const from = server.mark();
        const h = await connect();
        try {
          await c.run(h);
          await expectRefused(server, h, c.code, from, c);
        } finally {
          h.close();
        }
      });
    }
  } finally {
    await bob.finish();
  }
}

/**
 * `parts` (each a body and its `to`) as records of `h`'s session with seqnos from `from`,
 * signed as one batch (PROTOCOL §6.1), as the JSON of the one user msg that carries them (§6.3).
 */
export async function signedUserMsgJson(
  h: HostileClient,
  from: number,
  parts: readonly { body: Body; to: string }[],
): Promise<Record<string, unknown>> {
  const made = parts.map(({ body, to }, j) => {
    const { k, ct, c } = sealContent(body);
    const record: MessageRecord = {
      sid: h.sessionId!,
      dir: "c2s",
      to,
      seqno: from + j,
      ts: Date.now(),
      ct,
      c,
    };
    return { record, k };
  });
  await signBatch(h.opts.identity.signingKey, made.map((m) => m.record));
  return userMsgJson(made.map((m) => m.record), made.map((m) => m.k));
}

/**
 * Every text with `k` (readable) that reaches `h` in a relay, a `stored` or a `msg` until one
 * equal to `until` does.
 */
export async function textsUntil(h: HostileClient, until: string): Promise<string[]> {
  const seen: string[] = [];
  while (true) {
    const m = contentMessage(await h.readRecord(20_000));
    const items: { record: unknown; k?: string }[] = m.type === "relay"
      ? m.records
      : m.type === "msg" || m.type === "stored"
      ? [m]
      : [];
    for (const item of items) {
      if (!item.k) continue;
      // deno-lint-ignore no-explicit-any
      const body = openContent(decodeRecord(item.record as any), fromBase64(item.k));
      if (body.kind !== "text") continue;
      seen.push(body.text);
      if (body.text === until) return seen;
    }
  }
}

/**
 * A user's msg (PROTOCOL §6.3) of `records` signed as a batch (their `sig` and `batch` as they
 * are now, tampered or not), each with its content key: the batch's members from the first
 * record, the proof from their paths when they fit (groupProof), else the first record's path
 * as it is (a tampered path stays wrong on the wire); each record without `sig` and `batch`.
 */
export function userMsgJson(
  records: readonly MessageRecord[],
  keys: readonly Uint8Array[],
): Record<string, unknown> {
  const head = records[0];
  const batch = head.batch ?? { i: 0, n: 1, path: [] };
  const first = head.seqno - batch.i;
  const indices = records.map((r) => r.seqno - first);
  let proof: Uint8Array[];
  try {
    proof = groupProof(indices, batch.n, records.map((r) => r.batch?.path ?? []));
  } catch {
    proof = batch.path;
  }
  if (records.length === 1 && batch.path.length !== leafPathLength(batch.i, batch.n)) {
    proof = batch.path;
  }
  const msg: Record<string, unknown> = { type: "msg" };
  if (head.sig) msg.sig = toBase64(head.sig);
  Object.assign(msg, {
    first,
    n: batch.n,
    proof: proof.map(toBase64),
    records: records.map((r, j) => {
      const { sig: _sig, batch: _batch, ...bare } = encodeRecord(r);
      return { record: bare, k: toBase64(keys[j]) };
    }),
  });
  return msg;
}

/** How many hashes leaf `i`'s RFC 9162 path in a tree of `n` has. */
function leafPathLength(i: number, n: number): number {
  let length = 0;
  for (let lo = 0, hi = n; hi - lo > 1; length++) {
    let k = 1;
    while (k * 2 < hi - lo) k *= 2;
    if (i < lo + k) hi = lo + k;
    else lo += k;
  }
  return length;
}
