/**
 * What a chat client does around its {@link E2eClient} (PROTOCOL §12.5–§12.7), the same for
 * the CLI (commands/connect.ts) and the page (web/app.ts): which received messages are the
 * layer's own, what must happen before a line leaves, what `/verify` shows, and how `/passwd`
 * takes the device's state along. The texts are returned, never printed: each client shows
 * them its own way.
 */
import { codeOf, type ErrorCode, SecureChatError } from "../errors.ts";
import { formatFingerprint } from "../pki/describe.ts";
import { canonicalName, LOBBY, recipientUser } from "../message/record.ts";
import type { ChatSession, ReceivedMessage } from "../session/session.ts";
import type { RelayedText } from "../session/relay.ts";
import type { E2eClient, KeysChannel } from "./client.ts";
import type { SealedState } from "./sealed_state.ts";

/**
 * Hands the layer what is its own: the server's `keys` answers and notices, and `members`
 * bodies (§12.5). A relayed `sender_key` record was taken by the session already. A refusal
 * (§6.5) or a `queued` (§6.6) is told to the layer; one of our sender keys is the layer's alone,
 * any other is shown.
 * @returns true when `message` is not for display
 */
export async function takeE2eMessage(
  e2e: E2eClient,
  message: ReceivedMessage,
  channel: KeysChannel,
): Promise<boolean> {
  // A refused sender key is told at the author's next lobby line, as a member who cannot read
  // (prepareLobby), a refused fetch fails the line it was for: neither seqno is a line the user
  // wrote.
  if (message.type === "refused") return e2e.onNotDelivered(message.of, message.code, channel);
  // A sender key stored for a member the server took for offline (failing over to another
  // node, or a node's view of the cluster lagging after a failover) is the layer's, not a line
  // of the user's to report.
  if (message.type === "queued") return e2e.onQueued(message.of);
  if (message.type === "msg" && message.body.kind === "keys") {
    // A failed prekey top-up is retried at the next notice or login.
    await e2e.onKeys(message.body, channel).catch(() => {});
    return true;
  }
  if (message.type === "msg" && message.body.kind === "members") {
    e2e.onMembers(message.body);
    return true;
  }
  return message.type === "relay" && message.relayed.senderKey !== undefined;
}

/**
 * Whether `message` is the server's count of this device's one-time prekeys, its answer to our
 * publication (§12.6): from then on a contact who fetches our devices finds this one.
 */
export function confirmsPublication(e2e: E2eClient, message: ReceivedMessage): boolean {
  return message.type === "msg" && message.body.kind === "keys" &&
    message.body.device === e2e.device && message.body.opks_left !== undefined;
}

/** Whether a line may leave, and what the user must be told first. */
export interface SendReadiness {
  warnings: string[];
  /** Why the line is not sent at all (said to the user); absent when it may go. */
  refusal?: string;
  /** How the user could fix a refusal, when there is a way. */
  hint?: string;
}

/**
 * Makes a line to `to` ready to go end to end: the lobby's sender key for its current
 * members (§12.5), or a private recipient's devices checked and sessions started (§12.3).
 * A private line whose every device was refused is not sent.
 */
export async function readyToSend(
  e2e: E2eClient,
  to: string,
  channel: KeysChannel,
): Promise<SendReadiness> {
  const warnings: string[] = [];
  if (to === LOBBY) {
    try {
      const { unreadable } = await e2e.prepareLobby(channel);
      for (const { user, reason } of unreadable) {
        warnings.push(
          `${user} cannot read your lobby lines (${reason}); they go end to end to everyone else`,
        );
      }
      return { warnings };
    } catch (error) {
      return { warnings, refusal: `not sent to the lobby: ${(error as Error).message}` };
    }
  }
  const user = recipientUser(to);
  if (user === null) return { warnings };
  // A line that cannot go end to end is not sent at all, never sent readable (§12.6).
  try {
    const { refused } = await e2e.prepare(user, channel);
    for (const { device, reason } of refused) {
      warnings.push(
        `warning: ${user}'s device ${device} is left out, its keys were refused: ${reason}`,
      );
    }
    return { warnings };
  } catch (error) {
    return {
      warnings,
      refusal: `not sent to ${user}: ${codeOf(error)}: ${(error as Error).message}`,
      ...(error instanceof SecureChatError && error.hint ? { hint: error.hint } : {}),
    };
  }
}

/**
 * `/verify <user>`: the fingerprint of the certificate that signs each of the user's devices'
 * end-to-end keys, checked now (a revoked certificate's keys are refused), to compare out of
 * band with what the user sees in `securechat cert show` (PROTOCOL §12.2).
 * @returns the lines to show, in order; `problem` marks a refusal rather than a finding
 */
export async function verifyLines(
  e2e: E2eClient,
  user: string,
  channel: KeysChannel,
): Promise<{ text: string; problem: boolean }[]> {
  const name = canonicalName(user);
  const lines: { text: string; problem: boolean }[] = [];
  const problem = (text: string) => lines.push({ text, problem: true });
  const finding = (text: string) => lines.push({ text, problem: false });
  try {
    const { devices, refused } = await e2e.identify(name, channel);
    for (const { device, reason } of refused) {
      problem(`${name}'s device ${device}: keys refused: ${reason}`);
    }
    if (devices.length === 0) {
      problem(`${name} has no device with valid end-to-end keys`);
      return lines;
    }
    for (const { device, fingerprint } of devices) {
      finding(
        `${name} device ${device}: end-to-end keys signed by certificate ` +
          formatFingerprint(fingerprint),
      );
    }
    finding(`compare the fingerprint with ${name} in person or by a channel you trust`);
  } catch (error) {
    problem(`${name}'s end-to-end keys refused: ${(error as Error).message}`);
  }
  return lines;
}

/**
 * What a relayed line shows (PROTOCOL §6.4, §12.6): its text, or in its place why this device
 * cannot read it (no key, step 9) or why it cannot be shown (the author's malformed content,
 * steps 10–11) — never as if it were text.
 */
export function relayedLine(relayed: RelayedText): string {
  if (relayed.undecryptable !== undefined) return `[cannot decrypt: ${relayed.undecryptable}]`;
  if (relayed.malformed !== undefined) return `[cannot show: ${relayed.malformed}]`;
  return relayed.text;
}

/**
 * What to do after `/passwd` failed, per code (PROTOCOL §6.7): one table for the CLI and the
 * page, which each show it their own way.
 */
const PASSWORD_CHANGE_HINTS: Partial<Record<ErrorCode, string>> = {
  AUTH_FAIL: "the current password was not right (or it changed meanwhile); nothing changed: " +
    "try /passwd again",
  RATE_LIMITED: "too many wrong passwords: wait (up to 15 minutes), or ask the operator to " +
    "run `securechat user unlock NAME`",
  INVALID_INPUT: "the server refused the new password: 8 to 1024 bytes, not the old one",
  DB_UNAVAILABLE: "the server's user database is down; nothing changed: try again in a minute",
  INTERNAL: "the server hit a bug; nothing changed: tell the operator",
  PROTOCOL_ERROR: "the session ended before the server answered, so whether the password " +
    "changed is unknown: log in with the new one, and if it is refused, with the old one",
  IO_ERROR: "this device's end-to-end state could not be saved, so nothing was sent: check " +
    "the disk (or the browser's storage) and try again",
};

/** The next step after `/passwd` failed: the error's own hint, else its code's sentence. */
export function passwordChangeHint(error: unknown): string | undefined {
  if (error instanceof SecureChatError && error.hint) return error.hint;
  return PASSWORD_CHANGE_HINTS[codeOf(error)];
}

/**
 * `/passwd` (PROTOCOL §6.7) with this device's end-to-end state along (§12.7), once the new
 * password has passed the rules: the state is saved under both passwords before the server is
 * asked, then kept under the new one when the server changed it, or under the old one alone
 * when it refused. When the session ends before the answer (PROTOCOL_ERROR: the outcome is
 * unknown) both stay, and the password of the next login decides which opens.
 * @returns a warning to show when the password changed but the state could not be moved
 *   over (it stays beside the state under the new one, and the next login takes it)
 * @throws the server's refusal (nothing changed); PROTOCOL_ERROR (the outcome is unknown);
 *   IO_ERROR (the state could not be saved: nothing was sent)
 */
export async function changePasswordWithState(
  session: Pick<ChatSession, "changePassword">,
  state: SealedState,
  e2e: E2eClient,
  current: string,
  next: string,
): Promise<{ warning?: string }> {
  state.beginRekey(next);
  try {
    await e2e.save(); // under the new password too, before the server is asked
    await session.changePassword(current, next);
  } catch (error) {
    // A failed removal of the new password's copy is harmless: the next login's password
    // (still the current one) opens the state, and that drops the copy.
    if (codeOf(error) !== "PROTOCOL_ERROR") await state.abandonRekey().catch(() => {});
    throw error;
  }
  try {
    await state.commitRekey();
    return {};
  } catch (error) {
    return {
      warning: `${(error as Error).message}: the end-to-end state under the new password is ` +
        "kept beside it and taken at your next login",
    };
  }
}
