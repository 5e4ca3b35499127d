/// <reference lib="dom" />
/**
 * The browser page: another client of the same protocol (issue 16). Everything here is user
 * interface; the handshake, session, transcript, receipts, relay checks and the end-to-end
 * layer (lib/e2e: this browser is a device with its own keys) are lib/'s, the very modules the
 * CLI runs, built for the browser with `#sync-crypto` mapped to @noble/* (scripts/web_build.ts).
 * Text from the network reaches the page only through textContent.
 */
import { pemEncode } from "../lib/pki/pem.ts";
import { codeOf, SecureChatError } from "../lib/errors.ts";
import { DEVICE_LIST_MAX_AGE_MS, E2eClient } from "../lib/e2e/client.ts";
import {
  changePasswordWithState,
  confirmsPublication,
  passwordChangeHint,
  readyToSend,
  relayedLine,
  takeE2eMessage,
  verifyLines,
} from "../lib/e2e/chat.ts";
import type { SealedState } from "../lib/e2e/sealed_state.ts";
import { checkPasswordChange } from "../lib/crypto/password.ts";
import { clientHandshake, type Credentials } from "../lib/handshake/client.ts";
import { CHAT_HELP, parseChatLine } from "../lib/session/chat_line.ts";
import { type SeenStorage, SeenStore } from "../lib/session/relay.ts";
import { ChatSession, type ReceivedMessage, type SessionEnd } from "../lib/session/session.ts";
import { isPermanent, isTakeover, worthReconnecting } from "../lib/session/reconnect.ts";
import { DEFAULT_MAX_SKEW_MS } from "../lib/handshake/common.ts";
import { recipientUser } from "../lib/message/record.ts";
import { openExportBundle } from "../lib/pki/export_bundle.ts";
import { formatFingerprint } from "../lib/pki/describe.ts";
import { TrustStore } from "../lib/pki/validate.ts";
import { MemoryTranscriptStorage } from "../lib/transcript/memory_storage.ts";
import { FrameConnection } from "../lib/wire/connection.ts";
import { opened, WebSocketByteConn } from "../lib/wire/websocket.ts";
import { forgetBrowserState, openBrowserState, resealBrowserState } from "./e2e_storage.ts";
import * as db from "./idb.ts";

/** How often a logged-in page asks the server for a newer CRL (also at each login and /verify). */
const CRL_REFRESH_MS = DEVICE_LIST_MAX_AGE_MS;
/** Reconnection waits, doubled per failure up to the last (plus up to 50 % jitter). */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  status: element<HTMLParagraphElement>("status"),
  identitySection: element<HTMLElement>("identity-section"),
  importForm: element<HTMLFormElement>("import-form"),
  bundleFile: element<HTMLInputElement>("bundle-file"),
  bundlePassword: element<HTMLInputElement>("bundle-password"),
  identityView: element<HTMLElement>("identity-view"),
  identityName: element<HTMLElement>("identity-name"),
  identityCa: element<HTMLElement>("identity-ca"),
  forget: element<HTMLButtonElement>("forget"),
  loginSection: element<HTMLElement>("login-section"),
  loginForm: element<HTMLFormElement>("login-form"),
  password: element<HTMLInputElement>("password"),
  emailLabel: element<HTMLElement>("email-label"),
  email: element<HTMLInputElement>("email"),
  previousSection: element<HTMLElement>("previous-section"),
  previousProblem: element<HTMLParagraphElement>("previous-problem"),
  previousPassword: element<HTMLInputElement>("previous-password"),
  chatSection: element<HTMLElement>("chat-section"),
  messages: element<HTMLOListElement>("messages"),
  sendForm: element<HTMLFormElement>("send-form"),
  line: element<HTMLInputElement>("line"),
  who: element<HTMLButtonElement>("who"),
  passwd: element<HTMLButtonElement>("passwd"),
  leave: element<HTMLButtonElement>("leave"),
  passwdForm: element<HTMLFormElement>("passwd-form"),
  passwdCurrent: element<HTMLInputElement>("passwd-current"),
  passwdNew: element<HTMLInputElement>("passwd-new"),
  passwdRepeat: element<HTMLInputElement>("passwd-repeat"),
  passwdCancel: element<HTMLButtonElement>("passwd-cancel"),
  archiveSection: element<HTMLElement>("archive-section"),
  archive: element<HTMLUListElement>("archive"),
};

interface Identity {
  stored: db.StoredIdentity;
  trust: TrustStore;
}

let identity: Identity | null = null;
let session: ChatSession | null = null;
/** Kept in memory only, for reconnecting: a resumption ticket first, the password after. */
let credentials: Exclude<Credentials, { mode: "resume" }> | null = null;
/**
 * The password before a change made from another client, given at this login to re-seal
 * this browser's end-to-end state under the current one; dropped once used (never sent).
 */
let previousPassword: string | undefined;
let ticket: Uint8Array | undefined;
let userLeft = false;
/**
 * This browser's end-to-end device for the logged-in user, opened at the first login with
 * the password the server accepted and kept across reconnections.
 */
let e2e: E2eClient | null = null;
/** Where `e2e` keeps its state: sealed under the password, re-encrypted by /passwd. */
let e2eState: SealedState | null = null;
/** This browser held relay marks for the user at login: it has chatted before. */
let chattedBefore = false;
/** The last refusal of the server's CRL shown (the same one is not shown again). */
let crlRefusal: string | undefined;
/** The server confirmed this session's publication of our keys (said once per session). */
let published = false;
/**
 * This browser's end-to-end state did not open with the password the server accepted: no
 * reconnection can help until the user acts.
 */
let stateLocked = false;

function setStatus(text: string): void {
  ui.status.textContent = text;
}

function clock(ts: number): string {
  return new Date(ts).toTimeString().slice(0, 8);
}

/** One line of the chat, built from text nodes only. */
function show(
  kind: "message" | "notice" | "error",
  parts: { ts?: number; author?: string; verified?: boolean; private?: boolean; text: string },
): void {
  const item = document.createElement("li");
  item.className = kind;
  const span = (className: string, text: string) => {
    const s = document.createElement("span");
    s.className = className;
    s.textContent = text;
    item.append(s);
    return s;
  };
  span("time", clock(parts.ts ?? Date.now()));
  if (parts.author !== undefined) span("author", parts.author);
  if (parts.verified) {
    span("verified", "\u2713").title = "the author's signature verified against our CA";
  }
  if (parts.private) span("private", "(private)");
  item.append(document.createTextNode(parts.text));
  const atBottom = ui.messages.scrollTop + ui.messages.clientHeight >= ui.messages.scrollHeight - 4;
  ui.messages.append(item);
  if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
}

async function onMessage(message: ReceivedMessage): Promise<void> {
  if (e2e && !published && confirmsPublication(e2e, message)) {
    published = true;
    show("notice", {
      ts: message.ts,
      author: "*",
      text: `end-to-end keys published: this browser is device ${e2e.device}`,
    });
  }
  if (session && e2e && await takeE2eMessage(e2e, message, session)) return;
  if (message.type === "refused") {
    show("error", { ts: message.ts, text: `message ${message.of} refused: ${message.code}` });
    return;
  }
  if (message.type === "queued") {
    show("notice", {
      ts: message.ts,
      author: "*",
      text: `message ${message.of} stored: the recipient is not online; ` +
        "it is delivered at their next login",
    });
    return;
  }
  if (message.type === "relay") {
    const { relayed } = message;
    if (relayed.duplicate) return; // shown in an earlier session
    show("message", {
      // A stored line (PROTOCOL §6.6) was written while we were away: its author's time.
      ts: relayed.stored ? relayed.record.ts : message.ts,
      author: relayed.author,
      verified: true,
      private: relayed.private,
      text: (relayed.stored ? "(while you were away) " : "") + relayedLine(relayed),
    });
    return;
  }
  if (message.type !== "msg") return; // a client receives no sealed records (PROTOCOL §12.6)
  const { body } = message;
  if (body.kind === "notice") show("notice", { ts: message.ts, author: "*", text: body.text });
  if (body.kind === "operator") {
    show("message", {
      ts: message.ts,
      author: "operator",
      verified: true,
      private: body.private,
      text: body.text,
    });
  }
}

function render(): void {
  ui.identitySection.hidden = false;
  ui.importForm.hidden = identity !== null;
  ui.identityView.hidden = identity === null;
  if (identity) {
    ui.identityName.textContent = identity.stored.username;
    ui.identityCa.textContent = formatFingerprint(identity.stored.caFingerprint);
  }
  ui.loginSection.hidden = identity === null || session !== null;
  ui.previousSection.hidden = !stateLocked;
  ui.chatSection.hidden = session === null;
  ui.forget.disabled = session !== null;
}

async function loadIdentity(): Promise<void> {
  const stored = await db.get<db.StoredIdentity>("identity", "current");
  identity = stored
    ? {
      stored,
      trust: await TrustStore.fromPem(
        stored.caPem,
        stored.crlDer && pemEncode("X509 CRL", stored.crlDer),
      ),
    }
    : null;
}

/**
 * Takes the server's CRL when it is the CA's and newer than this browser's (PKI.md "The
 * page's CRL"): the page then refuses revoked peers as the CLI does with its ca.crl. A CRL
 * that is not the CA's, or older than ours, is refused and ours kept; none is no news.
 */
async function refreshCrl(): Promise<void> {
  const current = identity!;
  let response: Response;
  try {
    response = await fetch("/crl", { cache: "no-store" });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot reach ${location.host}`, { cause });
  }
  if (response.status === 204) return; // the server holds none
  if (!response.ok) {
    throw new SecureChatError("IO_ERROR", `GET /crl answered ${response.status}`);
  }
  const der = new Uint8Array(await response.arrayBuffer());
  let adopted: Set<string> | null;
  try {
    adopted = current.trust.adoptCrl(await current.trust.checkCrl(der));
  } catch (error) {
    const text = `the server's CRL was refused: ${codeOf(error)}: ${(error as Error).message}`;
    if (text !== crlRefusal) show("error", { text }); // once, not at every refresh
    crlRefusal = text;
    return;
  }
  crlRefusal = undefined;
  if (adopted === null) return;
  current.stored = { ...current.stored, crlDer: der };
  await db.put("identity", "current", current.stored);
}

async function importBundle(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const file = ui.bundleFile.files?.[0];
  if (!file) return;
  setStatus("opening the bundle…");
  const opened = await openExportBundle(await file.text(), ui.bundlePassword.value);
  ui.bundlePassword.value = "";
  ui.importForm.reset();
  const stored: db.StoredIdentity = {
    username: opened.username,
    certDer: opened.certDer,
    signing: { algorithm: opened.signingKey.algorithm, key: opened.signingKey.key },
    caPem: opened.caPem,
    caFingerprint: opened.caFingerprint,
    crlDer: opened.crlDer,
  };
  await db.put("identity", "current", stored);
  identity = { stored, trust: opened.trust };
  setStatus(`imported ${opened.username}; the key is non-extractable in this browser`);
  render();
}

async function forgetIdentity(): Promise<void> {
  // The device's end-to-end keys go too: a new identity here is a new device.
  if (identity) await forgetBrowserState(identity.stored.username);
  await db.remove("identity", "current");
  identity = null;
  stateLocked = false;
  setStatus("identity forgotten");
  render();
}

function seenStorage(username: string): SeenStorage {
  return {
    name: "this browser's relay marks",
    read: async () => (await db.get<string>("seen", username)) ?? null,
    write: (text) => db.put("seen", username, text),
  };
}

async function login(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  if (!identity) return;
  const mode = new FormData(ui.loginForm).get("mode") === "register" ? "register" : "login";
  const username = identity.stored.username;
  const password = ui.password.value;
  credentials = mode === "register"
    ? { mode, username, password, email: ui.email.value }
    : { mode, username, password };
  previousPassword = stateLocked && ui.previousPassword.value
    ? ui.previousPassword.value
    : undefined;
  ui.password.value = "";
  ui.previousPassword.value = "";
  userLeft = false;
  ticket = undefined;
  e2e = null;
  e2eState = null;
  stateLocked = false;
  chattedBefore = (await db.get<string>("seen", username)) !== undefined;
  await chatLoop();
}

/** Sessions one after another until the user leaves or a reconnection is pointless. */
async function chatLoop(): Promise<void> {
  const seen = await SeenStore.load(
    seenStorage(identity!.stored.username),
    2 * DEFAULT_MAX_SKEW_MS,
  );
  for (let failures = 0;;) {
    let end: SessionEnd;
    try {
      end = await oneSession(seen);
      failures = 0;
    } catch (error) {
      const code = codeOf(error);
      if (code === "AUTH_FAIL" && ticket) {
        ticket = undefined; // used, expired or from a restarted server: the password it is
        continue;
      }
      show("error", { text: `cannot log in: ${code}: ${(error as Error).message}` });
      if (isPermanent(error) || stateLocked || ++failures >= BACKOFF_MS.length) {
        setStatus(`not connected (${code})`);
        credentials = null;
        e2e = null;
        e2eState = null;
        render();
        return;
      }
      await reconnectPause(failures);
      continue;
    }
    await seen.save().catch(() => {});
    await e2e?.save().catch(() => {});
    if (userLeft || !worthReconnecting(end)) {
      // A close with a code: this user logged in elsewhere (PROTOCOL §7.1, not taken back),
      // or the server's own certificate lapsed or was revoked (§5.2); an error: a refusal a
      // new login would meet again (our certificate revoked).
      if (!userLeft && isTakeover(end)) {
        show("notice", {
          author: "*",
          text: "session taken over: this user logged in again elsewhere (SESSION_TAKEN_OVER)",
        });
      } else if (!userLeft && end.code) {
        show("error", { text: `${end.code}: ${end.message ?? "the session ended"}` });
      }
      setStatus(`session ended${end.outcome === "closed" ? " with receipts" : ` (${end.code})`}`);
      credentials = null;
      e2e = null;
      e2eState = null;
      render();
      return;
    }
    // A server stopping closes every session with receipts first (a restart, a node leaving
    // a cluster): the page comes back as the CLI's `connect --reconnect` does.
    if (end.outcome === "closed") {
      show("notice", { author: "*", text: "the server closed the session; reconnecting" });
    } else show("error", { text: `connection lost (${end.code ?? end.outcome}); reconnecting` });
    await reconnectPause(1);
  }
}

async function reconnectPause(failures: number): Promise<void> {
  const base = BACKOFF_MS[Math.min(failures, BACKOFF_MS.length) - 1];
  const wait = base + Math.random() * base / 2;
  setStatus(`reconnecting in ${(wait / 1000).toFixed(1)} s…`);
  await new Promise((resolve) => setTimeout(resolve, wait));
}

/** Dials the page's own server, runs the handshake and the session to its end. */
async function oneSession(seen: SeenStore): Promise<SessionEnd> {
  const { stored, trust } = identity!;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  setStatus(`connecting to ${location.host}…`);
  await refreshCrl();
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  await opened(socket);
  const using: Credentials = ticket
    ? { mode: "resume", username: stored.username, ticket, wantTicket: true }
    : { ...credentials!, wantTicket: true };
  const established = await clientHandshake(new FrameConnection(new WebSocketByteConn(socket)), {
    identity: { certDer: stored.certDer, signingKey: stored.signing },
    trust,
    serverName: location.hostname,
    credentials: using,
  });
  ticket = established.ticket;
  // The account exists now: a reconnection without a ticket logs in.
  if (credentials?.mode === "register") {
    credentials = { mode: "login", username: credentials.username, password: credentials.password };
  }
  let device: E2eClient;
  try {
    device = await openDevice(stored);
  } catch (error) {
    established.conn.close();
    throw error;
  }
  // Saved to IndexedDB whenever the session makes its transcript durable (before it
  // acknowledges stored lines, PROTOCOL §6.6) and again when it ends.
  const storage = new MemoryTranscriptStorage(
    "this browser",
    (files) => keep(files, { outcome: "in progress" }),
  );
  session = await ChatSession.start(established, {
    transcripts: storage,
    serverName: location.hostname,
    relayTrust: trust,
    seen,
    keepKeys: true,
    e2e: device,
  });
  published = false;
  // Our bundle goes to the server's key directory at every login, before any typed line (a
  // failure only means first contacts to us wait for our next login).
  await device.publish(session).catch(() => {});
  setStatus(
    `logged in as ${session.username} to ${established.peer.commonName}; ` +
      `session ${session.sessionId.slice(0, 8)}`,
  );
  render();
  ui.line.focus();
  let end: SessionEnd;
  // A revocation reaches a long session too: contacts' devices are checked against the CRL
  // whenever their list is refetched (at most every DEVICE_LIST_MAX_AGE_MS).
  const crlTimer = setInterval(() => void refreshCrl().catch(() => {}), CRL_REFRESH_MS);
  try {
    end = await session.run({ onMessage });
  } finally {
    device.sessionEnded(session);
    clearInterval(crlTimer);
    session = null;
    render();
  }
  await archive(storage, end);
  return end;
}

/**
 * This browser's device for the user: its state from IndexedDB, opened with the password the
 * server just accepted (a wrong one was the server's AUTH_FAIL), or new keys. A state sealed
 * under the password before a change made elsewhere opens with that previous password, when
 * the user gave it, and is sealed again under the current one (PROTOCOL §12.7).
 * @throws DECRYPT_FAIL when the state opens with neither
 */
async function openDevice(stored: db.StoredIdentity): Promise<E2eClient> {
  if (e2e) return e2e;
  let state: SealedState;
  const previous = previousPassword;
  previousPassword = undefined; // tried once, whatever the outcome
  try {
    state = previous === undefined
      ? await openBrowserState(stored.username, credentials!.password)
      : await resealBrowserState(stored.username, previous, credentials!.password);
  } catch (error) {
    stateLocked = true;
    // Said beside the login form, where the previous password is asked for (the chat is not
    // shown without a session).
    ui.previousProblem.textContent = previous === undefined
      ? `This browser's end-to-end keys do not open with your password (${codeOf(error)}).`
      : "They open with neither your password nor the previous one given " +
        `(${codeOf(error)}).`;
    throw error;
  }
  if (previous !== undefined) {
    show("notice", {
      author: "*",
      text: "this browser's end-to-end keys are sealed under your current password now: the " +
        "same device, its conversations kept",
    });
  }
  const device = await E2eClient.open(
    state,
    { user: stored.username, certDer: stored.certDer, signingKey: stored.signing },
    identity!.trust,
  );
  if (device.fresh && chattedBefore) {
    // Lost state is a new conversation, said plainly (issue 13): never a silent failure.
    show("notice", {
      author: "*",
      text: `this browser's end-to-end keys for ${stored.username} are missing (cleared site ` +
        `data?): it starts again as a new device (${device.device}) with fresh keys, ` +
        "published now. Messages sent to the old device cannot be read here; your contacts' " +
        "next messages reach this one, and your next message to each starts a new conversation.",
    });
  }
  e2e = device;
  e2eState = state;
  return device;
}

/** Keeps a finished session's files in IndexedDB and lists them for download. */
async function archive(storage: MemoryTranscriptStorage, end: SessionEnd): Promise<void> {
  await keep(storage.files(), { outcome: end.outcome });
  await renderArchive();
}

/** Saves a session's files (the transcript's base name is the key). */
async function keep(files: db.StoredSession["files"], o: { outcome: string }): Promise<void> {
  const log = files.find((f) => f.name.endsWith(".log"));
  if (!log) return;
  const record: db.StoredSession = {
    base: log.name.slice(0, -".log".length),
    endedAt: Date.now(),
    outcome: o.outcome,
    files,
  };
  await db.put("sessions", record.base, record);
}

async function renderArchive(): Promise<void> {
  const sessions = (await db.all<db.StoredSession>("sessions")).sort((a, b) =>
    b.endedAt - a.endedAt
  );
  ui.archiveSection.hidden = sessions.length === 0;
  ui.archive.replaceChildren(...sessions.map((s) => {
    const item = document.createElement("li");
    item.append(
      document.createTextNode(`${new Date(s.endedAt).toLocaleString()} (${s.outcome}): `),
    );
    for (const file of s.files) {
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([file.bytes as BlobPart]));
      link.download = file.name;
      link.textContent = file.name.slice(s.base.length + 1) || file.name;
      link.className = "download";
      item.append(link);
    }
    return item;
  }));
}

async function sendLine(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const text = ui.line.value;
  ui.line.value = "";
  await sendText(text);
}

async function sendText(text: string): Promise<void> {
  if (!session) return;
  const parsed = parseChatLine(text);
  if (parsed.action === "quit") return await leave();
  if (parsed.action === "help") return show("notice", { text: CHAT_HELP });
  if (parsed.action === "passwd") return askPasswordChange();
  if (parsed.action === "error") return show("error", { text: parsed.message });
  const current = session;
  const device = e2e!;
  if (parsed.action === "verify") {
    // The newest CRL first: the answer is about the keys as they stand now. Without the
    // server, the CRL this browser holds decides.
    await refreshCrl().catch(() => {});
    for (const { text, problem } of await verifyLines(device, parsed.user, current)) {
      show(problem ? "error" : "notice", { author: "*", text });
    }
    return;
  }
  if (parsed.action !== "send") return;
  // The lobby's sender key or the recipient's devices first (PROTOCOL §12.5, §12.3).
  const { warnings, refusal } = await readyToSend(device, parsed.to, current);
  for (const warning of warnings) show("error", { text: warning });
  if (refusal) return show("error", { text: refusal });
  await current.send(parsed.body, parsed.to);
  if (parsed.body.kind === "text") {
    const to = recipientUser(parsed.to);
    show("message", {
      author: current.username,
      verified: false,
      private: to !== null,
      text: to === null ? parsed.body.text : `to ${to}: ${parsed.body.text}`,
    });
  }
}

/** `/passwd`: the form asks for the current password and the new one twice. */
function askPasswordChange(): void {
  ui.passwdForm.reset();
  ui.passwdForm.hidden = false;
  ui.passwdCurrent.focus();
}

function closePasswordChange(): void {
  ui.passwdForm.reset(); // no password stays in the page's inputs
  ui.passwdForm.hidden = true;
  ui.line.focus();
}

/**
 * `/passwd` (PROTOCOL §6.7): the new password is checked against the rules here before the
 * server checks them again, and this browser's end-to-end state follows it (§12.7), as the
 * CLI's does: saved under both passwords until the server answers, so that a crash or a closed
 * tab at any point leaves it readable with whichever password the server has.
 */
async function changePassword(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  const current = ui.passwdCurrent.value;
  const next = ui.passwdNew.value;
  const repeated = ui.passwdRepeat.value;
  closePasswordChange();
  const notChanged = (why: string) => show("error", { text: `password not changed: ${why}` });
  if (!session || !e2e || !e2eState) return notChanged("not logged in");
  if (repeated !== next) return notChanged("the passwords differ");
  try {
    checkPasswordChange(current, next);
  } catch (error) {
    return notChanged((error as Error).message);
  }
  show("notice", { author: "*", text: "changing your password…" });
  let warning: string | undefined;
  try {
    ({ warning } = await changePasswordWithState(session, e2eState, e2e, current, next));
  } catch (error) {
    notChanged(`${(error as Error).message} (${codeOf(error)})`);
    const hint = passwordChangeHint(error);
    if (hint) show("error", { text: `hint: ${hint}` });
    return;
  }
  // A reconnection logs in with the new password: a ticket from before the change is refused.
  if (credentials) credentials = { ...credentials, password: next };
  ticket = undefined;
  if (warning) show("error", { text: `warning: ${warning}` });
  show("notice", {
    author: "*",
    text: "password changed: log in with the new one from now on (resumption tickets issued " +
      "before are refused, on every server)",
  });
}

async function leave(): Promise<void> {
  userLeft = true;
  setStatus("leaving: exchanging receipts…");
  await session?.close();
}

/** Runs an event handler, reporting its failure on the page (never raw HTML). */
function guarded<E extends Event>(handler: (event: E) => Promise<void>): (event: E) => void {
  return (event) => {
    handler(event).catch((error) => {
      const code = codeOf(error);
      setStatus(`${code}: ${(error as Error).message}`);
      if (session) show("error", { text: `${code}: ${(error as Error).message}` });
    });
  };
}

ui.importForm.addEventListener("submit", guarded(importBundle));
ui.forget.addEventListener("click", guarded(forgetIdentity));
ui.loginForm.addEventListener("submit", guarded(login));
ui.loginForm.addEventListener("change", () => {
  const register = new FormData(ui.loginForm).get("mode") === "register";
  ui.emailLabel.hidden = !register;
  ui.email.required = register;
});
ui.sendForm.addEventListener("submit", guarded(sendLine));
ui.who.addEventListener("click", guarded(() => sendText("/who")));
ui.passwd.addEventListener("click", askPasswordChange);
ui.passwdForm.addEventListener("submit", guarded(changePassword));
ui.passwdCancel.addEventListener("click", closePasswordChange);
ui.leave.addEventListener("click", guarded(leave));

if (!globalThis.isSecureContext || !crypto.subtle) {
  setStatus("this page needs a secure context (https, or http://127.0.0.1 on this machine)");
} else {
  await loadIdentity();
  await renderArchive();
  render();
  setStatus(identity ? "ready" : "import your bundle to begin");
}
