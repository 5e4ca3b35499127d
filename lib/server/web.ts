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
import { WebSocketByteConn } from "../wire/websocket.ts";
import type { ChatServer } from "./server.ts";

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

/** @throws IO_ERROR when the address cannot be bound */
export function serveWeb(
  hostname: string,
  port: number,
  server: ChatServer,
  log: Logger,
  page?: ReadonlyMap<string, WebAsset>,
  crl: () => Uint8Array | undefined = () => undefined,
): WebFront {
  let http: Deno.HttpServer<Deno.NetAddr>;
  try {
    http = Deno.serve({ hostname, port, onListen: () => {} }, (request, info) => {
      // Read before the upgrade: the request's remoteAddr is gone after it.
      const address = info.remoteAddr.hostname;
      const peer = `${address}:${info.remoteAddr.port}`;
      const asset = page && request.method === "GET"
        ? page.get(new URL(request.url).pathname)
        : undefined;
      if (asset) return pageResponse(asset);
      if (request.method === "GET" && new URL(request.url).pathname === CRL_PATH) {
        return crlResponse(crl());
      }
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

function pageResponse(asset: WebAsset): Response {
  const headers: Record<string, string> = {
    ...SECURITY_HEADERS,
    "content-security-policy": PAGE_CSP,
    "content-type": asset.type,
  };
  // Assets are named by their hash: they never change. The page itself is always fetched anew.
  if (asset.type !== CONTENT_TYPES.html) {
    headers["cache-control"] = "public, max-age=31536000, immutable";
  }
  return new Response(asset.body as BodyInit, { status: 200, headers });
}

/**
 * The CRL as it is, CA-signed: anyone may read it (RFC 5280 CRLs are public), and a changed
 * byte only makes the page refuse it. Never cached: it is the page's news of revocations.
 */
function crlResponse(der: Uint8Array | undefined): Response {
  // No CRL is an answer, not an error (a browser logs every 404 as one).
  if (!der) return new Response(null, { status: 204, headers: SECURITY_HEADERS });
  return new Response(der as BodyInit, {
    status: 200,
    headers: { ...SECURITY_HEADERS, "content-type": "application/pkix-crl" },
  });
}

function plain(status: number, text: string): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "text/plain; charset=utf-8" },
  });
}
