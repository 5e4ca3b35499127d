/**
 * A loopback TCP proxy that understands the framing (PROTOCOL §2: u32be length ||
 * JSON) in both directions. It records every byte it sees, and lets a test rewrite,
 * duplicate, drop or corrupt chosen frames ("the 2nd `msg` frame from the client").
 * A length prefix the protocol forbids switches that direction to raw pass-through.
 */
import { concat, fromBase64, toBase64 } from "../../lib/bytes.ts";
import { MAX_FRAME_BYTES } from "../../lib/wire/frame.ts";

export type Direction = "c2s" | "s2c";

/** One frame as the proxy saw it, before any rule. */
export interface ProxiedFrame {
  /** Which proxied connection (0 for the first accepted). */
  conn: number;
  dir: Direction;
  /** Position among the frames of this connection and direction, from 0. */
  index: number;
  /** Position among frames of the same `type` in this connection and direction, from 0. */
  typeIndex: number;
  /** The JSON `type`, when the payload is a JSON object with one. */
  type?: string;
  payload: Uint8Array;
}

/**
 * A rule returns the payloads to forward instead of the frame (empty: drop it), or
 * undefined to leave it to the next rule (in the end: forward unchanged).
 */
export type Rule = (frame: ProxiedFrame) => Uint8Array[] | undefined;

/** An action on a matched frame's payload. */
export type Action = (payload: Uint8Array) => Uint8Array[];

export const drop: Action = () => [];
export const duplicate: Action = (p) => [p, p];
export const rewrite = (f: (p: Uint8Array) => Uint8Array): Action => (p) => [f(p)];

/** A JSON edit of the payload (member order kept where untouched). */
export const editJson = (f: (m: Record<string, unknown>) => unknown): Action => (p) => [
  new TextEncoder().encode(JSON.stringify(f(JSON.parse(new TextDecoder().decode(p))))),
];

/**
 * Flips one bit in a base64 member of the frame (`field` may be a dotted path such as
 * `key_share.pub`); `bit` counts from the first byte's most significant bit.
 */
export function flipBitIn(field: string, bit = 0): Action {
  return editJson((m) => {
    const path = field.split(".");
    let holder = m as Record<string, unknown>;
    for (const key of path.slice(0, -1)) holder = holder[key] as Record<string, unknown>;
    const last = path[path.length - 1];
    const bytes = fromBase64(holder[last] as string);
    bytes[bit >> 3] ^= 0x80 >> (bit & 7);
    holder[last] = toBase64(bytes);
    return m;
  });
}

/** Matches the `n`-th (from 1) frame of `type` in direction `dir` (any connection unless given). */
export function nth(
  dir: Direction,
  type: string,
  n: number,
  action: Action,
  conn?: number,
): Rule {
  return (f) =>
    f.dir === dir && f.type === type && f.typeIndex === n - 1 &&
      (conn === undefined || f.conn === conn)
      ? action(f.payload)
      : undefined;
}

function typeOf(payload: Uint8Array): string | undefined {
  try {
    const value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
    return value && typeof value === "object" && typeof value.type === "string"
      ? value.type
      : undefined;
  } catch {
    return undefined;
  }
}

/** Bytes as received from one side, in arrival order. */
export interface CapturedChunk {
  conn: number;
  dir: Direction;
  bytes: Uint8Array;
}

export class FrameProxy {
  readonly rules: Rule[] = [];
  readonly captured: CapturedChunk[] = [];
  readonly frames: ProxiedFrame[] = [];
  readonly #listener: Deno.TcpListener;
  readonly #tasks = new Set<Promise<void>>();
  readonly #conns = new Set<Deno.TcpConn>();
  #next = 0;
  #accepting: Promise<void>;

  private constructor(listener: Deno.TcpListener, readonly target: number) {
    this.#listener = listener;
    this.#accepting = this.#acceptLoop();
  }

  /** Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`targetPort`. */
  static start(targetPort: number, rules: Rule[] = []): FrameProxy {
    const proxy = new FrameProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), targetPort);
    proxy.rules.push(...rules);
    return proxy;
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /** Every byte seen in `dir` (both by default), joined in arrival order. */
  bytes(dir?: Direction): Uint8Array {
    return concat(...this.captured.filter((c) => !dir || c.dir === dir).map((c) => c.bytes));
  }

  framesOf(dir: Direction, type?: string): ProxiedFrame[] {
    return this.frames.filter((f) => f.dir === dir && (type === undefined || f.type === type));
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    await this.#accepting;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch {
        // closed
      }
    }
    await Promise.allSettled([...this.#tasks]);
  }

  async #acceptLoop(): Promise<void> {
    while (true) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      const id = this.#next++;
      const task = this.#relay(id, client);
      this.#tasks.add(task);
      void task.finally(() => this.#tasks.delete(task));
    }
  }

  async #relay(id: number, client: Deno.TcpConn): Promise<void> {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.target });
    } catch {
      client.close();
      return;
    }
    this.#conns.add(client);
    this.#conns.add(server);
    await Promise.allSettled([
      this.#pipe(id, "c2s", client, server),
      this.#pipe(id, "s2c", server, client),
    ]);
    for (const conn of [client, server]) {
      this.#conns.delete(conn);
      try {
        conn.close();
      } catch {
        // closed
      }
    }
  }

  async #pipe(id: number, dir: Direction, from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    let buffer: Uint8Array = new Uint8Array(0);
    let raw = false;
    let index = 0;
    const perType = new Map<string, number>();
    const write = async (bytes: Uint8Array) => {
      let offset = 0;
      while (offset < bytes.length) offset += await to.write(bytes.subarray(offset));
    };
    try {
      for await (const chunk of from.readable) {
        this.captured.push({ conn: id, dir, bytes: chunk.slice() });
        if (raw) {
          await write(chunk);
          continue;
        }
        buffer = concat(buffer, chunk);
        while (buffer.length >= 4) {
          const length = new DataView(buffer.buffer, buffer.byteOffset, 4).getUint32(0);
          if (length === 0 || length > MAX_FRAME_BYTES) {
            raw = true; // not a frame we may parse: pass the rest through untouched
            await write(buffer);
            buffer = new Uint8Array(0);
            break;
          }
          if (buffer.length < 4 + length) break;
          const payload = buffer.slice(4, 4 + length);
          buffer = buffer.slice(4 + length);
          const type = typeOf(payload);
          const typeIndex = type === undefined ? 0 : perType.get(type) ?? 0;
          if (type !== undefined) perType.set(type, typeIndex + 1);
          const frame: ProxiedFrame = { conn: id, dir, index: index++, typeIndex, type, payload };
          this.frames.push(frame);
          let out: Uint8Array[] | undefined;
          for (const rule of this.rules) {
            out = rule(frame);
            if (out !== undefined) break;
          }
          for (const p of out ?? [payload]) {
            const prefix = new Uint8Array(4);
            new DataView(prefix.buffer).setUint32(0, p.length);
            await write(concat(prefix, p));
          }
        }
      }
    } catch {
      // one side went away
    }
    if (buffer.length) await write(buffer).catch(() => {});
    try {
      await to.closeWrite();
    } catch {
      // already closed
    }
  }
}
