/** PEM (RFC 7468) framing for certificates, keys and CRLs. */
import { type ErrorCode, SecureChatError } from "../errors.ts";
import { fromBase64, toBase64 } from "../bytes.ts";

export function pemEncode(label: string, der: Uint8Array): string {
  const lines = toBase64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

const BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/**
 * The DER of every block labelled `label`, in order (text outside blocks is ignored,
 * as openssl does, so `openssl x509 -text` output still reads).
 * @throws `code` when a block's base64 is corrupt
 */
export function pemDecodeAll(text: string, label: string, code: ErrorCode): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const [, found, body] of text.matchAll(BLOCK_RE)) {
    if (found !== label) continue;
    try {
      out.push(fromBase64(body.replace(/\s+/g, "")));
    } catch (cause) {
      throw new SecureChatError(code, `corrupt base64 in PEM ${label}`, { cause });
    }
  }
  return out;
}

/**
 * The DER of the first block labelled `label`.
 * @throws `code` when there is none or it is corrupt
 */
export function pemDecode(text: string, label: string, code: ErrorCode): Uint8Array {
  const [der] = pemDecodeAll(text, label, code);
  if (!der) throw new SecureChatError(code, `no PEM ${label} found`);
  return der;
}
