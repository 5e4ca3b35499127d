/**
 * An auditor's decrypter for `serve --keylog` (PROTOCOL §12.9): given the frames a
 * FrameProxy recorded and the key log lines, it opens every sealed record of every
 * connection and returns each message's JSON (a relay's JSON form, PROTOCOL §6.4), as anyone
 * holding the log could.
 */
import { createHash } from "node:crypto";
import { concat, fromBase64, fromHex, toHex, u32be } from "../../lib/bytes.ts";
import { expandLabel, LABELS, RECORD_KEY_BYTES } from "../../lib/handshake/key_schedule.ts";
import { RecordLayer } from "../../lib/handshake/record.ts";
import type { Direction, ProxiedFrame } from "./proxy.ts";
import { messageOf } from "./relay_wire.ts";

export interface OpenedFrame {
  conn: number;
  dir: Direction;
  message: Record<string, unknown>;
}

/** Parses key log lines: label → client nonce (hex) → secret. */
function parseKeylog(text: string): Map<string, Map<string, Uint8Array>> {
  const out = new Map<string, Map<string, Uint8Array>>();
  for (const line of text.split("\n")) {
    const [label, nonce, secret] = line.trim().split(" ");
    if (!secret) continue;
    if (!out.has(nonce)) out.set(nonce, new Map());
    out.get(nonce)!.set(label, fromHex(secret));
  }
  return out;
}

/** Opens every frame of every connection in `frames` with the secrets in `keylog`. */
export function decryptWithKeylog(frames: ProxiedFrame[], keylog: string): OpenedFrame[] {
  const secrets = parseKeylog(keylog);
  const opened: OpenedFrame[] = [];
  const conns = [...new Set(frames.map((f) => f.conn))];
  for (const conn of conns) {
    const of = (dir: Direction) => frames.filter((f) => f.conn === conn && f.dir === dir);
    const [hello, serverHello] = [of("c2s")[0], of("s2c")[0]];
    if (!hello || !serverHello) continue;
    const mine = secrets.get(helloNonce(hello.payload));
    if (!mine) throw new Error(`connection ${conn}: no key log entry for its hello`);
    const hs = mine.get("HANDSHAKE_SECRET")!;
    for (const dir of ["c2s", "s2c"] as const) {
      const keys = handshakeKeys(hs, hello.payload, serverHello.payload, dir);
      const layer = new RecordLayer(keys, keys);
      let finished = 0;
      for (const frame of of(dir).slice(1)) {
        // A handshake record holds one message, a session record one or more (§3.2).
        const contents = finished < 2
          ? [layer.open(frame.payload)]
          : layer.openContents(frame.payload);
        for (const content of contents) {
          const message = messageOf(content);
          opened.push({ conn, dir, message });
          // Each direction moves to its application secret after its phase 2 finished (§5).
          if (message.type === "finished" && ++finished === 2) {
            layer.switchReceive(mine.get(`APP_TRAFFIC_${dir.toUpperCase()}_0`)!);
          }
          if (message.type === "key_update") layer.updateReceive();
        }
      }
    }
  }
  return opened;
}

/** The client hello's nonce (hex): what the key log files a connection's secrets under. */
export function helloNonce(hello: Uint8Array): string {
  return toHex(fromBase64(JSON.parse(new TextDecoder().decode(hello)).nonce));
}

/**
 * One direction's handshake record keys (PROTOCOL §4.1) from the logged handshake secret and
 * the two plaintext hellos (H1).
 */
export function handshakeKeys(
  hs: Uint8Array,
  hello: Uint8Array,
  serverHello: Uint8Array,
  dir: Direction,
): { key: Uint8Array; iv: Uint8Array } {
  const h1 = new Uint8Array(
    createHash("sha256").update(
      concat(u32be(hello.length), hello, u32be(serverHello.length), serverHello),
    ).digest(),
  );
  return {
    key: expandLabel(hs, LABELS.hsKey(dir), h1, RECORD_KEY_BYTES),
    iv: expandLabel(hs, LABELS.hsIv(dir), h1, 12),
  };
}
