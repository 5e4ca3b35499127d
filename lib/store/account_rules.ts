/** Field rules for new accounts; the user-name rule is the certificates' one (lib/pki/names.ts). */
import { SecureChatError } from "../errors.ts";
import { isReservedUserName, isValidUserName } from "../pki/names.ts";

export const EMAIL_MAX_LENGTH = 254; // RFC 5321's limit on a forward path

/** A basic shape only (one @, a dot in the domain, no spaces): the mailbox is not checked. */
const EMAIL_RE = /^[^\s@]+@[^\s@.]+(?:\.[^\s@.]+)+$/;

export function isValidEmail(email: string): boolean {
  return email.length <= EMAIL_MAX_LENGTH && EMAIL_RE.test(email);
}

/**
 * Checks the user name and email of a registration.
 * @throws INVALID_INPUT naming the field that broke its rule
 */
export function checkAccountFields(fields: { email: string; username: string }): void {
  if (!isValidUserName(fields.username)) {
    throw new SecureChatError(
      "INVALID_INPUT",
      "user name must be 3 to 32 characters of letters, digits, '_', '.' or '-', starting with a letter or digit",
    );
  }
  if (isReservedUserName(fields.username)) {
    throw new SecureChatError("INVALID_INPUT", "that user name is reserved for the server");
  }
  if (!isValidEmail(fields.email)) {
    throw new SecureChatError(
      "INVALID_INPUT",
      `email must look like name@example.org (at most ${EMAIL_MAX_LENGTH} characters)`,
    );
  }
}
