/**
 * File handling for the PKI directory: private material is 0600 in a 0700 directory,
 * and files are replaced by rename so a crash never leaves half a key behind.
 */
import { SecureChatError } from "../errors.ts";
import { randomBytes, toHex } from "../bytes.ts";

function ioError(action: string, path: string, cause: unknown): SecureChatError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new SecureChatError("IO_ERROR", `cannot ${action} ${path}: ${why}`, { cause });
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw ioError("inspect", path, error);
  }
}

/**
 * Writes `data` to `path` via a temporary file and a rename, with `mode` set before
 * any byte is written.
 * @throws IO_ERROR
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  const tmp = `${path}.${toHex(randomBytes(6))}.tmp`;
  try {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await Deno.writeFile(tmp, bytes, { mode, createNew: true });
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw ioError("write", path, error);
  }
}

/** @throws IO_ERROR */
export async function readTextFile(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw ioError("read", path, error);
  }
}
