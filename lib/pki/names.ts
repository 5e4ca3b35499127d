/** The user-name rule shared by certificates (CN, file names) and the user store. */

const USER_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$/;

/**
 * 3–32 characters of [A-Za-z0-9_.-], starting with a letter or digit. The rule keeps
 * names safe as file names (no separators, no leading dot) and as certificate CNs.
 */
export function isValidUserName(name: string): boolean {
  return USER_NAME_RE.test(name);
}
