/// <reference lib="dom" />
/**
 * The page's end-to-end state (PROTOCOL §12.7) in IndexedDB, sealed, opened and re-encrypted at
 * a password change exactly as the CLI's state file (lib/e2e/sealed_state.ts): AES-256-GCM under
 * a key derived with scrypt from the login password. Not a non-extractable WebCrypto key kept
 * beside it: such a key sits in the same profile as the state, so whoever copies the profile (a
 * backup, another account on the machine, a stolen disk) holds both and reads every ratchet,
 * which would undo forward secrecy for the conversations on this device. Under the password,
 * the profile alone opens nothing; the cost is one scrypt per login (docs/SECURITY.md §3.6).
 *
 * The slots are records of the `e2e` store: the state under the user name, and during a
 * password change `next` under `<user>:next` (no user name holds a colon). Each write is a
 * transaction of strict durability, and `next` replaces the state in one transaction.
 */
import { type SealedSlots, SealedState } from "../lib/e2e/sealed_state.ts";
import * as db from "./idb.ts";

/** The records of `username`'s state, for {@link SealedState}. */
function slotsOf(username: string): SealedSlots {
  const keyOf = (slot: "state" | "next") => slot === "state" ? username : nextKey(username);
  return {
    where: "this browser's end-to-end state",
    read: (slot) => db.get<string>("e2e", keyOf(slot)),
    write: (slot, text) => db.put("e2e", keyOf(slot), text),
    dropNext: () => db.remove("e2e", nextKey(username)),
    promoteNext: () => db.move("e2e", nextKey(username), username),
  };
}

function nextKey(username: string): string {
  return `${username}:next`;
}

/**
 * Opens `username`'s state with the password the server accepted at this login (none yet: a
 * new device).
 * @throws DECRYPT_FAIL (the password changed elsewhere since, or the record is damaged)
 */
export function openBrowserState(username: string, password: string): Promise<SealedState> {
  return SealedState.open(slotsOf(username), password);
}

/**
 * Opens `username`'s state with `previous`, the password before a change made from another
 * client, and seals it again under `current`, the password the server accepted at this login.
 * @throws DECRYPT_FAIL (`previous` does not open it either)
 */
export function resealBrowserState(
  username: string,
  previous: string,
  current: string,
): Promise<SealedState> {
  return SealedState.reseal(slotsOf(username), previous, current);
}

/** Removes `username`'s state from this browser, a password change's copy included. */
export async function forgetBrowserState(username: string): Promise<void> {
  await db.remove("e2e", username);
  await db.remove("e2e", nextKey(username));
}
