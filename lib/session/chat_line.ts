/** What a typed line means (issue #6): a chat line, or one of the slash commands. */
import {
  type Body,
  LOBBY,
  MAX_TEXT_CHARS,
  recipientUser,
  TO_SERVER,
  userRecipient,
} from "../message/record.ts";

export type ChatLine =
  | { action: "send"; body: Body; to: string }
  | { action: "quit" }
  | { action: "help" }
  | { action: "passwd" }
  | { action: "ignore" }
  | { action: "error"; message: string };

export const CHAT_HELP = [
  "/msg <user> <text>  send to one user only",
  "/who                list who is online",
  "/passwd             change your password (the old one, then the new one twice)",
  "/help               this list",
  "/quit or !!exit     end the session (receipts are exchanged)",
  "anything else       goes to everyone in the lobby",
].join("\n");

export function parseChatLine(line: string): ChatLine {
  const trimmed = line.trim();
  if (trimmed === "") return { action: "ignore" };
  if (trimmed === "/quit" || trimmed === "!!exit") return { action: "quit" };
  if (trimmed === "/help") return { action: "help" };
  if (trimmed === "/passwd") return { action: "passwd" };
  if (/^\/passwd\s/.test(trimmed)) {
    // Not echoed back: what follows may be a password typed where it should not be.
    return { action: "error", message: "usage: /passwd (it asks for the passwords, unechoed)" };
  }
  if (trimmed === "/who") return { action: "send", body: { kind: "who" }, to: TO_SERVER };
  const direct = /^\/msg\s+(\S+)\s+(.+)$/s.exec(trimmed);
  if (direct) return text(direct[2], direct[1]);
  if (trimmed.startsWith("/msg")) return { action: "error", message: "usage: /msg <user> <text>" };
  if (/^\/[a-z]/i.test(trimmed)) {
    return { action: "error", message: `unknown command ${trimmed.split(/\s/)[0]}; try /help` };
  }
  return text(line);
}

function text(value: string, to?: string): ChatLine {
  if (value.length > MAX_TEXT_CHARS) {
    return { action: "error", message: `message longer than ${MAX_TEXT_CHARS} characters` };
  }
  if (to !== undefined && recipientUser(userRecipient(to)) === null) {
    return { action: "error", message: `${to.slice(0, 64)} is not a valid user name` };
  }
  return {
    action: "send",
    body: { kind: "text", text: value },
    to: to === undefined ? LOBBY : userRecipient(to),
  };
}
