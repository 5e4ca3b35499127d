/**
 * A malicious server for issue 13's promise ("a malicious server built from lib parts can
 * neither read nor alter a message, nor make a recipient accept a message under another
 * author"): the real ChatServer in this process, whose key log (PROTOCOL §12.9) hands every
 * transport secret to a FrameProxy in front of it. The proxy opens each message the server
 * sends, lets the test rewrite it, and seals it again under the same key and counter, so a
 * client cannot tell the rewrite from the server's own words: whatever this does, a server
 * operator could do. It keeps everything: every frame of every connection, both ways, and the
 * server's transcripts, database and log, for a test to search.
 */
import { join } from "node:path";
import { fromBase64, fromHex, toBase64, utf8 } from "../../lib/bytes.ts";
import { RecordLayer } from "../../lib/handshake/record.ts";
import {
  type Body,
  decodeRecord,
  encodeRecord,
  openContent,
  type RecordJson,
  sealContent,
} from "../../lib/message/record.ts";
import { openUserStore } from "../../lib/store/open.ts";
import type { LoggedEvent } from "../../testkit/fuzz.ts";
import type { TestPki } from "../../testkit/pki.ts";
import { decryptWithKeylog, handshakeKeys, helloNonce, type OpenedFrame } from "./keylog.ts";
import { startInProcessServer } from "./in_process_server.ts";
import { FrameProxy, type ProxiedFrame } from "./proxy.ts";
import { encodeRelay, type ForgedRelay, isBinaryRelay, messageOf } from "./relay_wire.ts";

/**
 * A message the server sends, as JSON (a relay as its JSON form, PROTOCOL §6.4), and to whom:
 * `user` once the server's `auth_ok` named the connection's user (`conn` counts connections from
 * 0). What it returns replaces the message: JSON, a relay's JSON form (`type` "relay"), which goes
 * in its binary layout (tests/helpers/relay_wire.ts), or the content's bytes as they are (a relay
 * in JSON, a malformed one).
 */
export type Rewrite = (
  message: Record<string, unknown>,
  to: { conn: number; user?: string },
) => Record<string, unknown> | Uint8Array | undefined;

export interface HostileServer {
  /** Where clients connect (the proxy). */
  port: number;
  logs: LoggedEvent[];
  /** Everything the server wrote (its transcripts, its SQLite database). */
  dirs: string[];
  /**
   * Tried in order on each message the server sends after its handshake keys exist; the
   * first that returns a message replaces the original.
   */
  rewrites: Rewrite[];
  /** Every frame so far, both ways, opened with the key log: what the operator holds. */
  opened(): OpenedFrame[];
  dispose(): Promise<void>;
}

/** `accounts`: user name → password, registered before the server starts. */
export async function startHostileServer(
  pki: TestPki,
  accounts: Record<string, string>,
): Promise<HostileServer> {
  const dbDir = await Deno.makeTempDir({ prefix: "securechat-hostile-" });
  const keylog: string[] = [];
  const inner = await startInProcessServer(pki, accounts, {
    store: await openUserStore({ url: `sqlite:${join(dbDir, "users.db")}` }),
    keylog: (line) => void keylog.push(line),
  });
  const rewrites: Rewrite[] = [];
  const connections = new Map<number, Resealer>();
  const proxy = FrameProxy.start(inner.server.port, [(frame) => {
    let resealer = connections.get(frame.conn);
    if (!resealer) connections.set(frame.conn, resealer = new Resealer(keylog, rewrites));
    return resealer.pass(frame);
  }]);
  return {
    port: proxy.port,
    logs: inner.logs,
    dirs: [inner.transcripts, dbDir],
    rewrites,
    opened: () => decryptWithKeylog(proxy.frames, keylog.join("\n")),
    async dispose() {
      await proxy.close();
      await inner.dispose();
      await Deno.remove(dbDir, { recursive: true });
    },
  };
}

/**
 * One connection's server-to-client direction, opened and sealed again in step with the
 * client (the same keys and counters as the server's, PROTOCOL §3.2, §4.4, §5).
 */
class Resealer {
  #hello?: Uint8Array;
  #serverHello?: Uint8Array;
  #layer?: RecordLayer;
  #finished = 0;
  #user?: string;
  /** The application secret, read once the handshake logged it (after the layer exists). */
  #appSecret?: () => Uint8Array;

  constructor(readonly keylog: string[], readonly rewrites: Rewrite[]) {}

  pass(frame: ProxiedFrame): Uint8Array[] | undefined {
    if (frame.dir === "c2s") {
      if (frame.index === 0) this.#hello = frame.payload;
      return undefined;
    }
    if (frame.index === 0) {
      this.#serverHello = frame.payload;
      return undefined;
    }
    const layer = this.#layer ??= this.#handshakeLayer();
    // A handshake record holds one message, a session record one or more (§3.2): each is
    // rewritten on its own, and they are sealed again together, as the server sent them.
    const contents = this.#finished < 2
      ? [layer.open(frame.payload)]
      : layer.openContents(frame.payload);
    const messages = contents.map(messageOf);
    const out = messages.map((message, j) => {
      if (message.type === "auth_ok") this.#user = message.username as string;
      for (const rewrite of this.rewrites) {
        const replaced = rewrite(message, { conn: frame.conn, user: this.#user });
        if (replaced instanceof Uint8Array) return replaced;
        if (replaced?.type === "relay") return encodeRelay(replaced as unknown as ForgedRelay);
        if (replaced) return utf8(JSON.stringify(replaced));
      }
      return isBinaryRelay(contents[j]) ? contents[j] : utf8(JSON.stringify(message));
    });
    const sealed = layer.sealContents(out);
    // As the client does: the application secret after the second finished, the next one
    // after each key_update (the last message of its record) — both for what we open and for
    // what we seal.
    for (const message of messages) {
      if (message.type === "finished" && ++this.#finished === 2) {
        const app = this.#appSecret!();
        layer.switchReceive(app);
        layer.switchSend(app.slice());
      }
      if (message.type === "key_update") {
        layer.updateReceive();
        layer.updateSend();
      }
    }
    return [sealed];
  }

  #handshakeLayer(): RecordLayer {
    const nonce = helloNonce(this.#hello!);
    const secret = (label: string) => {
      const line = this.keylog.find((l) => l.startsWith(`${label} ${nonce} `));
      if (!line) throw new Error(`no ${label} in the key log for this connection`);
      return fromHex(line.split(" ")[2]);
    };
    this.#appSecret = () => secret("APP_TRAFFIC_S2C_0");
    const keys = () =>
      handshakeKeys(secret("HANDSHAKE_SECRET"), this.#hello!, this.#serverHello!, "s2c");
    return new RecordLayer(keys(), keys());
  }
}

/**
 * A server `msg` (`s2c`, not signed: the server makes its own records) with its body
 * replaced: the rewrite a lying key directory needs. Undefined for any other message or when
 * `edit` leaves the body alone.
 */
export function rewriteServerBody(
  message: Record<string, unknown>,
  edit: (body: Body) => Body | undefined,
): Record<string, unknown> | undefined {
  if (message.type !== "msg" || typeof message.k !== "string") return undefined;
  const record = decodeRecord(message.record as RecordJson);
  const body = edit(openContent(record, fromBase64(message.k)));
  if (!body) return undefined;
  const { k, ct, c } = sealContent(body);
  return { ...message, record: encodeRecord({ ...record, ct, c }), k: toBase64(k) };
}

/** Every opened frame as text, with the content of each record the server can open. */
export function everythingReadable(opened: OpenedFrame[]): string {
  const out: string[] = [];
  for (const { message } of opened) {
    out.push(JSON.stringify(message));
    if (typeof message.k === "string" && message.record) {
      const record = decodeRecord(message.record as RecordJson);
      out.push(JSON.stringify(openContent(record, fromBase64(message.k))));
    }
  }
  return out.join("\n");
}
