/**
 * PROXY protocol version 2 (haproxy's proxy-protocol.txt §2.2), the binary header a load
 * balancer (`send-proxy-v2`) puts before the client's bytes so the node sees the client's
 * address rather than the balancer's: the per-address limits (PROTOCOL §8.2) then limit
 * clients, not the balancer. Read only on connections from addresses given as
 * `serve --trusted-proxy`: from anyone else such a header would let a client choose the
 * address it is limited under.
 */
import { SecureChatError } from "../errors.ts";

/** The 12 bytes every v2 header starts with. */
const SIGNATURE = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
const FIXED_BYTES = 16;
/** Address block plus TLVs; haproxy sends far less. Bounds what a broken proxy makes us read. */
const MAX_BLOCK_BYTES = 512;
const COMMAND_LOCAL = 0x0;
const COMMAND_PROXY = 0x1;
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;

export interface ProxiedAddress {
  /** The client's address as the balancer saw it; undefined for a LOCAL header (the balancer's own). */
  hostname?: string;
  port?: number;
}

/**
 * Reads exactly one v2 header from `conn` (nothing after it), within `timeoutMs`.
 * @throws PROTOCOL_ERROR no valid v2 header; TIMEOUT when it does not arrive in time
 */
export async function readProxyHeader(
  conn: Deno.Conn,
  timeoutMs: number,
): Promise<ProxiedAddress> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new SecureChatError("TIMEOUT", "no PROXY header from the balancer in time")),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([readHeader(conn), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function readHeader(conn: Deno.Conn): Promise<ProxiedAddress> {
  const fixed = await readExactly(conn, FIXED_BYTES);
  return parseProxyHeader(fixed, await readExactly(conn, blockLength(fixed)));
}

/** @throws PROTOCOL_ERROR */
export function blockLength(fixed: Uint8Array): number {
  if (!SIGNATURE.every((b, i) => fixed[i] === b)) bad("not a PROXY protocol v2 header");
  if (fixed[12] >> 4 !== 2) bad("PROXY protocol version is not 2");
  const length = (fixed[14] << 8) | fixed[15];
  if (length > MAX_BLOCK_BYTES) bad("PROXY header address block too long");
  return length;
}

/**
 * The address in a v2 header: `fixed` is its first 16 bytes, `block` the rest.
 * @throws PROTOCOL_ERROR
 */
export function parseProxyHeader(fixed: Uint8Array, block: Uint8Array): ProxiedAddress {
  if (block.length !== blockLength(fixed)) bad("PROXY header length mismatch");
  const command = fixed[12] & 0x0f;
  if (command === COMMAND_LOCAL) return {};
  if (command !== COMMAND_PROXY) bad("unknown PROXY command");
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (fixed[13] === TCP_OVER_IPV4) {
    if (block.length < 12) bad("PROXY IPv4 address block too short");
    return { hostname: block.subarray(0, 4).join("."), port: view.getUint16(8) };
  }
  if (fixed[13] === TCP_OVER_IPV6) {
    if (block.length < 36) bad("PROXY IPv6 address block too short");
    const groups = Array.from({ length: 8 }, (_, i) => view.getUint16(i * 2).toString(16));
    return { hostname: groups.join(":"), port: view.getUint16(32) };
  }
  return bad("PROXY header is not TCP over IPv4 or IPv6");
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let got = 0; got < n;) {
    const read = await conn.read(out.subarray(got));
    if (read === null) bad("connection closed inside the PROXY header");
    got += read;
  }
  return out;
}

function bad(message: string): never {
  throw new SecureChatError("PROTOCOL_ERROR", message);
}
