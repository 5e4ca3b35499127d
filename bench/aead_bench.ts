/**
 * ChaCha20-Poly1305 per call, the JavaScript implementation (lib/crypto/chacha20_poly1305.ts)
 * beside node:crypto's and libcrypto's over FFI (lib/crypto/openssl_symmetric.ts), at several
 * plaintext lengths: CPU µs per seal and per open, this process (process.cpuUsage, microsecond
 * resolution), alternated within each round so load moves all alike; then SHA-256 and
 * HMAC-SHA-256 per call, JavaScript (lib/crypto/sha256_short.ts) beside libcrypto. Where they
 * cross are the node backend's bounds (CHACHA20_POLY1305_JS_MAX_BYTES without libcrypto, the
 * NATIVE_* bounds in lib/crypto/sync_node.ts with it; docs/PERFORMANCE.md, sessions 11 and 14).
 *
 *   deno run -A bench/aead_bench.ts [--sizes 32,128,256,384,512,768,1024,2048] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { cpuPerCall } from "./_util.ts";
import { createCipheriv, createDecipheriv } from "node:crypto";
import {
  CHACHA20_POLY1305_JS_MAX_BYTES,
  chaCha20Poly1305OpenJs,
  chaCha20Poly1305SealJs,
} from "../lib/crypto/chacha20_poly1305.ts";
import { randomBytes } from "../lib/bytes.ts";
import { libcrypto } from "../lib/crypto/libcrypto.ts";
import { OpenSslSymmetric } from "../lib/crypto/openssl_symmetric.ts";
import { hmacSha256Short, sha256Short } from "../lib/crypto/sha256_short.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "32,128,256,384,512,768,1024,2048" },
    rounds: { type: "string", default: "3" },
  },
});
const sizes = values.sizes.split(",").map(Number);
const rounds = Number(values.rounds);

const TAG = { authTagLength: 16 } as const;

/** node:crypto as lib/crypto/sync_node.ts calls it above the crossover. */
function nodeSeal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array) {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, TAG);
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const head = cipher.update(plaintext);
  const tail = cipher.final();
  const tag = cipher.getAuthTag();
  const out = new Uint8Array(head.length + tail.length + tag.length);
  out.set(head);
  out.set(tail, head.length);
  out.set(tag, head.length + tail.length);
  return out;
}

function nodeOpen(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array) {
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, TAG);
  decipher.setAAD(aad, { plaintextLength: sealed.length - 16 });
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const head = decipher.update(sealed.subarray(0, sealed.length - 16));
  decipher.final();
  return head;
}

const opened = libcrypto();
if ("reason" in opened) throw new Error(`libcrypto: ${opened.reason}`);
const native = new OpenSslSymmetric(opened);

const key = randomBytes(32);
const nonce = randomBytes(12);
const aad = randomBytes(21); // a record's AAD is 5 bytes, the content's 21 (PROTOCOL §3.2, §6.1)
console.log(`ChaCha20-Poly1305, CPU µs per call (JS bound now ${CHACHA20_POLY1305_JS_MAX_BYTES})`);
console.log("bytes\tround\tseal node\tseal JS\tseal FFI\topen node\topen JS\topen FFI");
for (let round = 1; round <= rounds; round++) {
  for (const size of sizes) {
    const plaintext = randomBytes(size);
    const sealed = nodeSeal(key, nonce, plaintext, aad);
    const n = Math.max(2000, Math.floor(4_000_000 / (size + 200)));
    const figures = [
      cpuPerCall(() => nodeSeal(key, nonce, plaintext, aad), n),
      cpuPerCall(() => chaCha20Poly1305SealJs(key, nonce, plaintext, aad), n),
      cpuPerCall(() => native.seal(key, nonce, plaintext, aad), n),
      cpuPerCall(() => nodeOpen(key, nonce, sealed, aad), n),
      cpuPerCall(() => chaCha20Poly1305OpenJs(key, nonce, sealed, aad), n),
      cpuPerCall(() => native.open(key, nonce, sealed, aad), n),
    ];
    console.log([size, round, ...figures.map((f) => f.toFixed(2))].join("\t"));
  }
}

console.log("SHA-256 and HMAC-SHA-256 (32-byte key), CPU µs per call");
console.log("bytes\tround\tSHA JS\tSHA FFI\tHMAC JS\tHMAC FFI");
for (let round = 1; round <= rounds; round++) {
  for (const size of sizes.filter((size) => size <= 1024)) {
    const data = randomBytes(size);
    const n = Math.max(2000, Math.floor(4_000_000 / (size + 200)));
    const figures = [
      cpuPerCall(() => sha256Short([data]), n),
      cpuPerCall(() => native.sha256([data]), n),
      cpuPerCall(() => hmacSha256Short(key, [data]), n),
      cpuPerCall(() => native.hmacSha256(key, [data]), n),
    ];
    console.log([size, round, ...figures.map((f) => f.toFixed(2))].join("\t"));
  }
}
