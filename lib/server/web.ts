/**
 * `serve --web PORT`: the WebSocket front and the browser page. `GET /ws` upgrades to a
 * WebSocket that carries the protocol's frames, one binary message per frame (PROTOCOL §2),
 * into the same ChatServer core as the TCP listener: the same admission, handshake, session
 * and lobby. `GET /` is the page (web/dist, built by `deno task web:build`),
 * `GET /assets/NAME.HASH.EXT` its content-addressed assets, and `GET /crl` the CA's CRL the
 * server holds now (DER; 204 No Content without one), which the page checks under the CA certificate and
 * adopts only when newer than its own (PKI.md "The page's CRL"); everything else answers 404.
 * Every response forbids framing, sniffing and referrers; the page may run only its own
 * same-origin script, connect only to its own origin, and write HTML only through Trusted
 * Types (it writes none). No cookie is ever set (authentication is the protocol's).
 */
import { SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { ChatServer } from "./server.ts";
import { acceptKey, AwaitingClose, WebSocketServerConn } from "./websocket_conn.ts";

export const WEBSOCKET_PATH = "/ws";
/** The CA's CRL in force on this server: the page's revocation source (it trusts its CA only). */
export const CRL_PATH = "/crl";

/** Sent on every HTTP response of the web front. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "cross-origin-resource-policy": "same-origin",
};

/**
 * The page's policy: its own script and style only (no inline code, no other origin), its
 * own origin for the WebSocket, no forms posted anywhere, and no HTML sink (Trusted Types).
 */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "form-action 'none'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join("; ");

/** One file of the page, by URL path. */
export interface WebAsset {
  body: Uint8Array;
  type: string;
}

const CONTENT_TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  svg: "image/svg+xml",
};

/**
 * The built page in `dir` (index.html and assets/): `/` and `/assets/NAME`, read once.
 * @throws IO_ERROR when `dir` holds no built page
 */
export async function loadWebAssets(dir: string): Promise<Map<string, WebAsset>> {
  const assets = new Map<string, WebAsset>();
  try {
    assets.set("/", { body: await Deno.readFile(`${dir}/index.html`), type: CONTENT_TYPES.html });
    for await (const entry of Deno.readDir(`${dir}/assets`)) {
      const type = CONTENT_TYPES[entry.name.split(".").at(-1) ?? ""];
      if (!entry.isFile || !type) continue;
      assets.set(`/assets/${entry.name}`, {
        body: await Deno.readFile(`${dir}/assets/${entry.name}`),
        type,
      });
    }
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `no built page in ${dir}`, {
      cause,
      hint: "run `deno task web:build` in the checkout",
    });
  }
  return assets;
}

export interface WebFront {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Listens on `hostname:port` (node:http, so the upgrade's socket is ours to frame: see
 * websocket_conn.ts for why not Deno's WebSocket server).
 * @throws IO_ERROR when the address cannot be bound
 */
export async function serveWeb(
  hostname: string,
  port: number,
  server: ChatServer,
  log: Logger,
  page?: ReadonlyMap<string, WebAsset>,
  crl: () => Uint8Array | undefined = () => undefined,
): Promise<WebFront> {
  const http = createServer((request, response) => {
    const path = pathOf(request);
    const asset = page && request.method === "GET" ? page.get(path) : undefined;
    if (asset) return pageResponse(response, asset);
    if (request.method === "GET" && path === CRL_PATH) return crlResponse(response, crl());
    const refusal = refusalOf(request) ?? { status: 400, why: "bad WebSocket upgrade" };
    log("WEB_REFUSED", { peer: peerOf(request.socket), detail: refusal.why });
    plain(response, refusal.status, refusal.why);
  });
  const awaitingClose = new AwaitingClose();
  http.on("upgrade", (request: IncomingMessage, socket: Socket, head: Uint8Array) => {
    socket.on("error", () => {}); // a reset before the session owns it: nothing to answer
    const peer = peerOf(socket);
    const refusal = refusalOf(request) ?? handshakeFault(request);
    if (refusal) {
      log("WEB_REFUSED", { peer, detail: refusal.why });
      socket.end(rawResponse(refusal.status, refusal.why));
      return;
    }
    const headers = {
      upgrade: "websocket",
      connection: "Upgrade",
      "sec-websocket-accept": acceptKey(String(request.headers["sec-websocket-key"])),
      ...SECURITY_HEADERS,
    };
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\n" +
        Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("") +
        "\r\n",
    );
    server.serveConnection(
      new WebSocketServerConn(socket, head, awaitingClose),
      socket.remoteAddress ?? "",
      `ws:${peer}`,
    );
  });
  // A malformed request: answered 400 and closed, never an error event left unhandled.
  http.on("clientError", (_error: Error, socket: Socket) => {
    if (socket.writable) socket.end(rawResponse(400, "bad request"));
    else socket.destroy();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      http.once("error", reject);
      http.listen(port, hostname, () => {
        http.off("error", reject);
        resolve();
      });
    });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot listen on ${hostname}:${port} for the web`, {
      cause,
      hint: "is another server running on that port?",
    });
  }
  // Once listening, a failure to accept (out of descriptors, say) is logged, never thrown
  // out of an event (which would end the process).
  http.on("error", (error: Error) => log("INTERNAL", { detail: `web front: ${error.message}` }));
  return {
    port: (http.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}

function pathOf(request: IncomingMessage): string {
  try {
    return new URL(request.url ?? "/", "http://web").pathname;
  } catch {
    return "";
  }
}

function peerOf(socket: Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}

/** Why `request` is not a WebSocket upgrade this front accepts, or null if it is one. */
function refusalOf(request: IncomingMessage): { status: number; why: string } | null {
  if (pathOf(request) !== WEBSOCKET_PATH) return { status: 404, why: "not found" };
  if (request.method !== "GET") return { status: 405, why: "method not allowed" };
  if (String(request.headers.upgrade).toLowerCase() !== "websocket") {
    return { status: 426, why: "WebSocket upgrade required" };
  }
  // A page from another site must not open sessions from its visitors' browsers (they would
  // count against their address's limits). Non-browser clients send no Origin.
  const origin = request.headers.origin;
  if (origin !== undefined && !sameHost(origin, request.headers.host ?? null)) {
    return { status: 403, why: "cross-origin WebSocket refused" };
  }
  return null;
}

/** RFC 6455 §4.2.1: what the opening handshake must carry besides the upgrade itself. */
function handshakeFault(request: IncomingMessage): { status: number; why: string } | null {
  const connection = String(request.headers.connection ?? "").toLowerCase();
  if (!connection.split(",").some((token) => token.trim() === "upgrade")) {
    return { status: 400, why: "bad WebSocket upgrade: no Connection: Upgrade" };
  }
  const key = request.headers["sec-websocket-key"];
  if (typeof key !== "string" || !/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    return { status: 400, why: "bad WebSocket upgrade: Sec-WebSocket-Key" };
  }
  if (request.headers["sec-websocket-version"] !== "13") {
    return { status: 426, why: "WebSocket version 13 required" };
  }
  return null;
}

function sameHost(origin: string, host: string | null): boolean {
  try {
    return host !== null && new URL(origin).host === host;
  } catch {
    return false;
  }
}

function pageResponse(response: ServerResponse, asset: WebAsset): void {
  const headers: Record<string, string> = {
    ...SECURITY_HEADERS,
    "content-security-policy": PAGE_CSP,
    "content-type": asset.type,
  };
  // Assets are named by their hash: they never change. The page itself is always fetched anew.
  if (asset.type !== CONTENT_TYPES.html) {
    headers["cache-control"] = "public, max-age=31536000, immutable";
  }
  response.writeHead(200, headers).end(asset.body);
}

/**
 * The CRL as it is, CA-signed: anyone may read it (RFC 5280 CRLs are public), and a changed
 * byte only makes the page refuse it. Never cached: it is the page's news of revocations.
 */
function crlResponse(response: ServerResponse, der: Uint8Array | undefined): void {
  // No CRL is an answer, not an error (a browser logs every 404 as one).
  if (!der) return void response.writeHead(204, SECURITY_HEADERS).end();
  response.writeHead(200, { ...SECURITY_HEADERS, "content-type": "application/pkix-crl" })
    .end(der);
}

function plain(response: ServerResponse, status: number, text: string): void {
  response.writeHead(status, { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" })
    .end(`${text}\n`);
}

/** The same refusal written on a socket taken out of HTTP (an upgrade request). */
function rawResponse(status: number, text: string): string {
  const body = `${text}\n`;
  const headers = {
    ...SECURITY_HEADERS,
    "content-type": "text/plain; charset=utf-8",
    "content-length": String(new TextEncoder().encode(body).length),
    connection: "close",
  };
  return `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n` +
    Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("") +
    `\r\n${body}`;
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  426: "Upgrade Required",
};
