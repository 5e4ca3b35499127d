/**
 * The CLI's end-to-end state on disk (PROTOCOL §12.7): the slots of lib/e2e/sealed_state.ts as
 * files, `<transcripts>/<user>.e2e` and, during a password change, `<file>.next`, mode 0600.
 * Written crash-safely: a temporary file, fsync, rename over the old one, fsync of the
 * directory. A crash leaves the old state or the new one, never half of either.
 */
import { dirname } from "node:path";
import { utf8 } from "../bytes.ts";
import { type SealedSlots, SealedState } from "../e2e/sealed_state.ts";
import { SecureChatError } from "../errors.ts";

/**
 * Opens (or prepares to create) the state file at `path` with `secret`, the password the server
 * accepted at this login (see {@link SealedState.open} for a `.next` left by a password change).
 * @throws DECRYPT_FAIL (wrong password or key file, or a damaged file); IO_ERROR
 */
export function openStateFile(path: string, secret: string): Promise<SealedState> {
  return SealedState.open(stateFileSlots(path), secret);
}

/** Where a password change keeps the state under the new password until the server answers. */
function nextOf(path: string): string {
  return `${path}.next`;
}

function stateFileSlots(path: string): SealedSlots {
  const fileOf = (slot: "state" | "next") => slot === "state" ? path : nextOf(path);
  return {
    where: `the end-to-end state ${path}`,
    read: (slot) => readIfThere(fileOf(slot)),
    write: (slot, text) => writeDurably(fileOf(slot), text),
    dropNext: () => removeDurably(nextOf(path)),
    promoteNext: async () => {
      try {
        await Deno.rename(nextOf(path), path);
        await syncDirectory(path);
      } catch (cause) {
        throw new SecureChatError("IO_ERROR", `cannot write the end-to-end state ${path}`, {
          cause,
        });
      }
    },
    unrefTimer: (timer) => Deno.unrefTimer(timer),
  };
}

/** @throws IO_ERROR for anything but a missing file */
async function readIfThere(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return undefined;
    throw new SecureChatError("IO_ERROR", `cannot read the end-to-end state ${path}`, { cause });
  }
}

/** @throws IO_ERROR */
async function writeDurably(path: string, body: string): Promise<void> {
  const tmp = `${path}.tmp`;
  try {
    await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      const data = utf8(body);
      for (let off = 0; off < data.length;) off += await file.write(data.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
    await syncDirectory(path);
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot write the end-to-end state ${path}`, {
      cause,
    });
  }
}

/** @throws IO_ERROR */
async function removeDurably(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) return;
    throw new SecureChatError("IO_ERROR", `cannot remove ${path}`, { cause });
  }
  await syncDirectory(path);
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
