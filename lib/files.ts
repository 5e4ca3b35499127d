/**
 * Files that must survive a crash whole: private keys, certificates and the CA's records, the
 * end-to-end state, relay marks. A file is replaced by writing a temporary one beside it (its
 * mode set before any byte is written), fsyncing it, renaming it over the old one and fsyncing
 * the directory, so a crash leaves the old file or the new one, never half of either, and a
 * rename that returned is not undone by a power cut.
 */
import { SecureChatError } from "./errors.ts";
import { randomBytes, toHex, utf8 } from "./bytes.ts";
import { dirname } from "node:path";

function ioError(action: string, path: string, cause: unknown): SecureChatError {
  // Deno's message repeats the path after the errno ("… (os error 2): readfile '/x'"): the
  // reason alone reads better after ours, and the cause keeps the rest.
  const why = (cause instanceof Error ? cause.message : String(cause))
    .replace(/ \(os error \d+\)(: .*)?$/s, "");
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
 * Replaces `path` by `data` durably (see above), `mode` set before any byte is written.
 * @throws IO_ERROR
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o600,
): Promise<void> {
  const tmp = `${path}.${toHex(randomBytes(6))}.tmp`;
  try {
    const bytes = typeof data === "string" ? utf8(data) : data;
    const file = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      await Deno.chmod(tmp, mode); // creation applied the umask
      for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
    await syncDirectory(path);
  } catch (error) {
    await Deno.remove(tmp).catch(() => {});
    throw ioError("write", path, error);
  }
}

/** Removes `path` (already gone: nothing to do) durably. @throws IO_ERROR */
export async function removeDurably(path: string): Promise<void> {
  try {
    await Deno.remove(path);
    await syncDirectory(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw ioError("remove", path, error);
  }
}

/** `from` replaces `to` durably, in one atomic step. @throws IO_ERROR */
export async function renameDurably(from: string, to: string): Promise<void> {
  try {
    await Deno.rename(from, to);
    await syncDirectory(to);
  } catch (error) {
    throw ioError("rename", from, error);
  }
}

/** Makes a rename or removal in `path`'s directory durable. */
async function syncDirectory(path: string): Promise<void> {
  const dir = await Deno.open(dirname(path), { read: true });
  try {
    await dir.sync();
  } catch {
    // some file systems refuse fsync on a directory; the rename is still atomic
  } finally {
    dir.close();
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
