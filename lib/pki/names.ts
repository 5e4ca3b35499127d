/**
 * User names (issue 11 item 3): the one rule shared by certificates (CN, file names), the
 * handshake's CN check, the user store and revocation, and the one canonical form they all
 * compare by. docs/PKI.md "Names" states the rules.
 */

const USER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$/;

/** What the operator speaks as in the lobby: no user may be issued or register it. */
export const OPERATOR_NAME = "server";

/** Names no user certificate or account may have, nor anything confusable with them. */
export const RESERVED_USER_NAMES: readonly string[] = [OPERATOR_NAME];

/**
 * 3–32 characters of [A-Za-z0-9_.-], starting with a letter or digit. The rule keeps
 * names safe as file names (no separators, no leading dot) and as certificate CNs, and
 * keeps every other script out: no homoglyph from Cyrillic or Greek can enter a name.
 */
export function isValidUserName(name: string): boolean {
  return USER_NAME_RE.test(name);
}

/**
 * Whether `name` is a valid name in its canonical form (3–32 characters of [a-z0-9_.-],
 * starting with a letter or digit): the syntactic rule for the name in a `user:` recipient
 * (PROTOCOL §6.1), which a verifier without the account list can apply.
 */
export function isCanonicalUserName(name: string): boolean {
  return isValidUserName(name) && canonicalName(name) === name;
}

/**
 * The canonical form of a valid name: NFC, then case-folded. Names are ASCII by rule, so
 * NFC changes nothing and folding is ASCII lower-casing; SQLite's NOCASE and MySQL's
 * ascii_general_ci compare exactly this way. Two names are the same user iff their
 * canonical forms are equal.
 */
export function canonicalName(name: string): string {
  return name.normalize("NFC").toLowerCase();
}

/**
 * What looks alike in common fonts, modelled on UTS #39's skeletons and restricted to our
 * repertoire: letter pairs first (on the canonical form), then single characters. The
 * separators `_`, `.` and `-` count as one.
 */
const LOOKALIKE_PAIRS: readonly [string, string][] = [["rn", "m"], ["vv", "w"]];
const LOOKALIKE_CHARS: Readonly<Record<string, string>> = {
  "0": "o",
  "1": "l",
  "i": "l",
  "_": "-",
  ".": "-",
};

/**
 * The skeleton of a name: two names with the same skeleton could be taken for each other
 * on screen (`alice`, `ALICE`, `a1ice`, `aIice`; `bob_smith`, `bob.smith`; `rnallory`,
 * `mallory`). A second name whose skeleton is another user's is refused.
 */
export function nameSkeleton(name: string): string {
  let skeleton = canonicalName(name);
  for (const [pair, single] of LOOKALIKE_PAIRS) skeleton = skeleton.replaceAll(pair, single);
  return [...skeleton].map((c) => LOOKALIKE_CHARS[c] ?? c).join("");
}

/** The reserved names' skeletons, made once: every login checks against them. */
const RESERVED_SKELETONS: ReadonlySet<string> = new Set(RESERVED_USER_NAMES.map(nameSkeleton));

/** Whether `name` is, or could be taken for, a reserved name. */
export function isReservedUserName(name: string): boolean {
  return RESERVED_SKELETONS.has(nameSkeleton(name));
}
