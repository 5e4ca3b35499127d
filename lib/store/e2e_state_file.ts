/**
 * The CLI's end-to-end state on disk (PROTOCOL §12.7): the slots of lib/e2e/sealed_state.ts as
 * files, `<transcripts>/<user>.e2e` and, during a password change, `<file>.next`, mode 0600,
 * each replaced durably (lib/files.ts): a crash leaves the old state or the new one, never half
 * of either.
 */
import { type SealedSlots, SealedState } from "../e2e/sealed_state.ts";
import { SecureChatError } from "../errors.ts";
import { removeDurably, renameDurably, writeFileAtomic } from "../files.ts";
import { dirname } from "node:path";

/**
 * Opens (or prepares to create) the state file at `path` with `secret`, the password the server
 * accepted at this login (see {@link SealedState.open} for a `.next` left by a password change).
 * @throws DECRYPT_FAIL (wrong password or key file, or a damaged file); IO_ERROR
 */
export function openStateFile(path: string, secret: string): Promise<SealedState> {
  return SealedState.open(stateFileSlots(path), secret);
}

/**
 * Opens the state file at `path`, still sealed under `previous` (the password before a change
 * made from another client), and seals it again under `current` crash-safely (see
 * {@link SealedState.reseal}).
 * @throws DECRYPT_FAIL (it opens with neither, or is damaged); IO_ERROR
 */
export function resealStateFile(
  path: string,
  previous: string,
  current: string,
): Promise<SealedState> {
  return SealedState.reseal(stateFileSlots(path), previous, current);
}

function stateFileSlots(path: string): SealedSlots {
  // Where a password change keeps the state under the new password until the server answers.
  const next = `${path}.next`;
  const fileOf = (slot: "state" | "next") => slot === "state" ? path : next;
  return {
    where: `the end-to-end state ${path}`,
    read: (slot) => readIfThere(fileOf(slot)),
    write: async (slot, text) => {
      try {
        await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      } catch (cause) {
        throw new SecureChatError("IO_ERROR", `cannot create the directory of ${path}`, { cause });
      }
      await writeFileAtomic(fileOf(slot), text);
    },
    dropNext: () => removeDurably(next),
    promoteNext: () => renameDurably(next, path),
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
