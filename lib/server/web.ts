/**
 * `serve --web PORT`: the WebSocket front. `GET /ws` upgrades to a WebSocket that carries the
 * protocol's frames, one binary message per frame (PROTOCOL §2), into the same ChatServer
 * core as the TCP listener: the same admission, handshake, session and lobby. Everything else
 * answers 404. Every response carries headers that forbid scripts, framing, sniffing, caching
 * and referrers; no cookie is ever set (authentication is the protocol's, in the frames).
 */
import { SecureChatError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { WebSocketByteConn } from "../wire/websocket.ts";
import type { ChatServer } from "./server.ts";

export const WEBSOCKET_PATH = "/ws";

/** Sent on every HTTP response of the web front. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "cross-origin-resource-policy": "same-origin",
};

export interface WebFront {
  readonly port: number;
  close(): Promise<void>;
}

/** @throws IO_ERROR when the address cannot be bound */
export function serveWeb(
  hostname: string,
  port: number,
  server: ChatServer,
  log: Logger,
): WebFront {
  let http: Deno.HttpServer<Deno.NetAddr>;
  try {
    http = Deno.serve({ hostname, port, onListen: () => {} }, (request, info) => {
      // Read before the upgrade: the request's remoteAddr is gone after it.
      const address = info.remoteAddr.hostname;
      const peer = `${address}:${info.remoteAddr.port}`;
      const refusal = refusalOf(request);
      if (refusal) {
        log("WEB_REFUSED", { peer, detail: refusal.why });
        return plain(refusal.status, refusal.why);
      }
      let upgraded: { socket: WebSocket; response: Response };
      try {
        upgraded = Deno.upgradeWebSocket(request);
      } catch (error) {
        // A malformed handshake (no Sec-WebSocket-Key, say): the client's error, not ours.
        log("WEB_REFUSED", { peer, detail: (error as Error).message });
        return plain(400, "bad WebSocket upgrade");
      }
      const { socket, response } = upgraded;
      server.serveConnection(
        new WebSocketByteConn(socket),
        address,
        `ws:${peer}`,
      );
      for (const [name, value] of Object.entries(SECURITY_HEADERS)) {
        response.headers.set(name, value);
      }
      return response;
    });
  } catch (cause) {
    throw new SecureChatError("IO_ERROR", `cannot listen on ${hostname}:${port} for the web`, {
      cause,
      hint: "is another server running on that port?",
    });
  }
  return { port: http.addr.port, close: () => http.shutdown() };
}

/** Why `request` is not a WebSocket upgrade this front accepts, or null if it is one. */
function refusalOf(request: Request): { status: number; why: string } | null {
  const url = new URL(request.url);
  if (url.pathname !== WEBSOCKET_PATH) return { status: 404, why: "not found" };
  if (request.method !== "GET") return { status: 405, why: "method not allowed" };
  if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return { status: 426, why: "WebSocket upgrade required" };
  }
  // A page from another site must not open sessions from its visitors' browsers (they would
  // count against their address's limits). Non-browser clients send no Origin.
  const origin = request.headers.get("origin");
  if (origin !== null && !sameHost(origin, request.headers.get("host"))) {
    return { status: 403, why: "cross-origin WebSocket refused" };
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

function plain(status: number, text: string): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" },
  });
}
