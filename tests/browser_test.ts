/**
 * The browser page in a real Chromium (issue 16), headless through puppeteer-core: two users
 * in two browser profiles (alice with an RSA-2048 key, bob with Ed25519) and one CLI user chat
 * through one `serve --web`. Each browser user
 * imports the bundle `cert export` wrote and registers from the page. Every line arrives once
 * and marked verified, markup from the network stays text, /who answers, the page logs no
 * console error and no CSP violation, the pages reconnect by themselves when the server is
 * killed and restarted, and the transcript and receipts the page offers for download verify
 * with `securechat verify`. A screenshot of the chat is saved as
 * test-artifacts/browser-chat.png (gitignored).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { runCli } from "../testkit/cli.ts";
import { makePki, type TestPki } from "../testkit/pki.ts";
import { LiveClient, logIs, registerUser, ServerProcess } from "../testkit/server_process.ts";
import { skipUnless } from "./helpers/optional_suites.ts";
import { type Browser, chromiumMissing, launchChromium, type Page } from "./helpers/chromium.ts";
import { PAGE_CSP } from "../lib/server/web.ts";
import { decodeRecord } from "../lib/message/record.ts";
import { loadCaSigner } from "../lib/ca/ca.ts";
import { formatFingerprint } from "../lib/pki/describe.ts";
import { revokeCertificates } from "../lib/ca/revoke.ts";
import { readCrlDer } from "../lib/ca/crl_file.ts";
import { fingerprintOf } from "../lib/pki/describe.ts";
import { FrameProxy } from "./helpers/proxy.ts";
import { decryptWithKeylog } from "./helpers/keylog.ts";
import { assertNoCanaries } from "./helpers/canaries.ts";
import { StateSeal } from "../lib/e2e/sealed_state.ts";
import { toBase64, toHex } from "../lib/bytes.ts";

const ARTIFACTS = new URL("../test-artifacts/", import.meta.url);
const ROOT = new URL("../", import.meta.url);

const skip = skipUnless("chromium", chromiumMissing(), "the browser page test in Chromium");

const PASSWORDS = {
  alice: "alice-password-1",
  bob: "bob-password-12",
  carol: "carol-password-1",
  dave: "dave-password-12",
};
const BUNDLE_PASSWORD = "bundle passphrase for the test";

/** `deno task web:build --out DIR`: the page as serve --web serves it. */
async function buildPage(dir: string): Promise<void> {
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/web_build.ts", "--out", dir],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(built.success, new TextDecoder().decode(built.stderr));
}

/** `cert export USER` into `work`/USER.bundle.pem under BUNDLE_PASSWORD. */
async function exportBundle(pkiDir: string, work: string, user: string): Promise<string> {
  const out = join(work, `${user}.bundle.pem`);
  await Deno.writeTextFile(join(work, "bundle-password"), BUNDLE_PASSWORD + "\n");
  const exported = await runCli([
    "cert",
    "export",
    user,
    "--dir",
    pkiDir,
    "--out",
    out,
    "--password-file",
    join(work, "bundle-password"),
  ]);
  assert.equal(exported.code, 0, exported.stderr);
  return out;
}

/** What one page logged that a user would call broken: console errors, exceptions, CSP. */
interface PageProblems {
  console: string[];
}

/**
 * A page in its own profile (its own IndexedDB); what it downloads goes to `downloads`;
 * `before` (source text) runs in every document before the page's own script.
 */
async function openPage(
  browser: Browser,
  url: string,
  problems: PageProblems,
  downloads: string,
  before = "",
): Promise<Page> {
  await Deno.mkdir(downloads, { recursive: true });
  const context = await browser.createBrowserContext({
    downloadBehavior: { policy: "allow", downloadPath: downloads },
  });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") problems.console.push(message.text());
  });
  page.on("pageerror", (error) => problems.console.push(`pageerror: ${error}`));
  // Recorded from the first script on: a violation would be reported here even if the page
  // swallowed its consequence.
  await page.evaluateOnNewDocument(`
    globalThis.cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => {
      globalThis.cspViolations.push(event.violatedDirective + " " + event.blockedURI);
    });
    ${before}
  `);
  const response = await page.goto(url, { waitUntil: "load" });
  assert.equal(response?.status(), 200);
  assert.equal(response?.headers()["content-security-policy"], PAGE_CSP);
  assert.equal(response?.headers()["set-cookie"], undefined);
  return page;
}

/** Polls an asynchronous `test` until it gives a value (pollUntil's asynchronous sibling). */
async function waitUntil<T>(
  test: () => Promise<T | undefined>,
  timeoutMs: number,
  describe: () => Promise<string>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await test();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms: ${await describe()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function statusText(page: Page): Promise<string> {
  return await page.$eval("#status", (e) => e.textContent ?? "");
}

async function waitForStatus(page: Page, pattern: RegExp, what: string): Promise<void> {
  await waitUntil(
    async () => pattern.test(await statusText(page)) ? true : undefined,
    30_000,
    async () => `${what}: status is "${await statusText(page)}"`,
  );
}

/** What Chromium itself logs for a connection to the page's server while it is down. */
const REFUSED_CONNECTION = new RegExp(
  "^WebSocket connection to 'ws://127\\.0\\.0\\.1:\\d+/ws' failed|" +
    "^Failed to load resource: net::ERR_CONNECTION_REFUSED$",
);

/** Waits for a new session of `user` on `page`: its status names another session than `was`. */
async function waitForNewSession(page: Page, user: string, was: string): Promise<void> {
  await waitUntil(
    async () => {
      const now = await statusText(page);
      return now.startsWith(`logged in as ${user} `) && now !== was || undefined;
    },
    60_000,
    async () => `${user}'s reconnection: status is "${await statusText(page)}"`,
  );
}

/** Imports the bundle and registers, as a user does: file picker, passwords, buttons. */
async function joinFromPage(page: Page, bundle: string, user: keyof typeof PASSWORDS) {
  // The page's script has opened its IndexedDB and shown the import form (the "load" event
  // does not wait for that).
  await waitForStatus(page, /^import your bundle to begin$/, `${user}'s page ready`);
  const input = await page.$("#bundle-file");
  await input!.uploadFile(bundle);
  await page.type("#bundle-password", BUNDLE_PASSWORD);
  await page.click("#import-form button[type=submit]");
  await waitForStatus(page, /^imported /, `${user}'s import`);
  assert.equal(await page.$eval("#identity-name", (e) => e.textContent), user);
  await page.click("input[name=mode][value=register]");
  await page.type("#password", PASSWORDS[user]);
  await page.type("#email", `${user}@example.com`);
  await submitLogin(page, user, "registration");
}

const isPublication = (l: ShownLine) =>
  l.author === "*" && l.text.startsWith("end-to-end keys published: this browser is device ");

/**
 * Submits the login form and waits until the session is up and the server has confirmed our
 * keys (a contact fetching our devices from then on finds this browser), as the CLI tests'
 * LiveClient.login does.
 */
async function submitLogin(page: Page, user: string, what: string): Promise<void> {
  const before = (await shown(page)).filter(isPublication).length;
  await page.click("#login-form button[type=submit]");
  await waitForStatus(page, new RegExp(`^logged in as ${user} `), `${user}'s ${what}`);
  await waitUntil(
    async () => (await shown(page)).filter(isPublication).length > before || undefined,
    20_000,
    async () => `${user}'s keys published; the page shows ${JSON.stringify(await shown(page))}`,
  );
}

async function say(page: Page, line: string): Promise<void> {
  await page.type("#line", line);
  await page.keyboard.press("Enter");
}

interface ShownLine {
  author: string;
  verified: boolean;
  private: boolean;
  text: string;
  hasElementChild: boolean;
}

/** The chat lines on a page, as the user sees them. */
async function shown(page: Page): Promise<ShownLine[]> {
  return await page.$$eval("#messages li", (items) =>
    items.map((item) => ({
      author: item.querySelector(".author")?.textContent ?? "",
      verified: item.querySelector(".verified") !== null,
      private: item.querySelector(".private") !== null,
      text: item.lastChild?.textContent ?? "",
      // Only the page's own spans: markup from a message must stay text.
      hasElementChild: [...item.children].some((child) => child.tagName !== "SPAN"),
    })));
}

async function waitForLine(page: Page, test: (line: ShownLine) => boolean, what: string) {
  return await waitUntil(
    async () => (await shown(page)).find(test),
    20_000,
    async () => `${what}; the page shows ${JSON.stringify(await shown(page))}`,
  );
}

Deno.test({
  name: "browser: two users in Chromium and one on the CLI chat through serve --web",
  ignore: skip,
  // puppeteer-core keeps its own timers and sockets to the browser past close().
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const work = await Deno.makeTempDir({ prefix: "securechat-browser-" });
    const pki = await makePki(["alice", "bob", "carol"], "ed25519");
    // alice holds the default key type (RSA-2048), bob Ed25519: both sign in the browser.
    await pki.issue("alice", "client", "rsa2048");
    await buildPage(join(work, "dist"));
    for (const user of ["alice", "bob"]) await exportBundle(pki.dir, work, user);
    const serverDir = join(work, "server");
    await Deno.mkdir(serverDir);
    const serve = (web: number, port = 0) =>
      ServerProcess.start({
        pkiDir: pki.dir,
        workDir: serverDir,
        args: ["--web", String(web), "--web-root", join(work, "dist"), "--port", String(port)],
      });
    let server = await serve(0);
    const webPort = Number(
      String((await server.waitFor(logIs("LISTEN_WEB"))).detail).split(":").pop(),
    );
    const url = `http://127.0.0.1:${webPort}/`;
    let browser: Browser | undefined;
    let carol: LiveClient | undefined;
    const problems: Record<"alice" | "bob", PageProblems> = {
      alice: { console: [] },
      bob: { console: [] },
    };
    try {
      await registerUser(server, pki.dir, "carol", PASSWORDS.carol);
      browser = await launchChromium();
      const downloads = join(work, "alice-downloads");
      const alice = await openPage(browser, url, problems.alice, downloads);
      const bob = await openPage(browser, url, problems.bob, join(work, "bob-downloads"));
      await joinFromPage(alice, join(work, "alice.bundle.pem"), "alice");
      await joinFromPage(bob, join(work, "bob.bundle.pem"), "bob");

      // The page's only script and stylesheet: its own origin, named by the SHA-256 of the
      // bytes served, under Subresource Integrity (their SHA-384), cached as immutable.
      const assets = await alice.evaluate<{ at: string; integrity: string }[]>(
        `[...document.querySelectorAll("script, link[rel=stylesheet]")]
          .map((e) => ({ at: e.src || e.href, integrity: e.integrity }))`,
      );
      assert.equal(assets.length, 2, JSON.stringify(assets));
      for (const { at, integrity } of assets) {
        const response = await fetch(at);
        const bytes = new Uint8Array(await response.arrayBuffer());
        const digest = async (algorithm: string) =>
          new Uint8Array(await crypto.subtle.digest(algorithm, bytes));
        const hash = toHex(await digest("SHA-256")).slice(0, 16);
        assert.ok(at.startsWith(url), at);
        assert.match(at.slice(url.length), new RegExp(`^assets/(app|style)\\.${hash}\\.(js|css)$`));
        assert.equal(integrity, `sha384-${toBase64(await digest("SHA-384"))}`);
        assert.equal(response.headers.get("cache-control"), "public, max-age=31536000, immutable");
      }
      // alice's key: in IndexedDB as a CryptoKey this browser signs with and never exports.
      assert.deepEqual(
        await alice.evaluate(`new Promise((resolve, reject) => {
          const open = indexedDB.open("securechat");
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const get = open.result.transaction("identity").objectStore("identity")
              .get("current");
            get.onsuccess = async () => {
              open.result.close();
              const key = get.result.signing.key;
              resolve({
                cryptoKey: key instanceof CryptoKey,
                extractable: key.extractable,
                usages: key.usages,
                exported: await crypto.subtle.exportKey("pkcs8", key)
                  .then(() => "exported", (e) => e.name),
              });
            };
          };
        })`),
        { cryptoKey: true, extractable: false, usages: ["sign"], exported: "InvalidAccessError" },
      );
      carol = await LiveClient.login({
        port: server.port,
        user: "carol",
        password: PASSWORDS.carol,
        pkiDir: pki.dir,
        transcripts: join(work, "carol-transcripts"),
      });

      await say(alice, "hello from alice's browser");
      await say(bob, "/msg alice only for alice");
      await carol.send("hello from the command line");
      await carol.send("<img src=x onerror=alert(1)> stays text");
      await carol.waitForLine((l) => l.includes("alice ✓ hello from alice's browser"));
      for (const page of [alice, bob]) {
        await waitForLine(page, (l) => l.text.includes("stays text"), "carol's markup line");
      }
      await waitForLine(bob, (l) => l.text === "hello from alice's browser", "alice at bob");
      await waitForLine(alice, (l) => l.text === "only for alice", "bob's private line");

      await alice.click("#who");
      await waitForLine(
        alice,
        (l) => l.author === "*" && l.text === "online: alice, bob, carol",
        "the /who answer",
      );

      // Every line once, from its author, with the author's signature verified.
      const expectations = [
        { page: alice, author: "bob", text: "only for alice", private: true },
        { page: alice, author: "carol", text: "hello from the command line", private: false },
        { page: bob, author: "alice", text: "hello from alice's browser", private: false },
        { page: bob, author: "carol", text: "hello from the command line", private: false },
      ];
      for (const e of expectations) {
        const matching = (await shown(e.page)).filter((l) => l.text === e.text);
        assert.equal(matching.length, 1, `${e.text}: shown ${matching.length} times`);
        assert.deepEqual(
          {
            author: matching[0].author,
            verified: matching[0].verified,
            private: matching[0].private,
          },
          { author: e.author, verified: true, private: e.private },
        );
      }
      // bob's private line to alice: on bob's page only as his own echo, nowhere at carol.
      assert.deepEqual(
        (await shown(bob)).filter((l) => l.text.includes("only for alice")).map((l) => l.author),
        ["bob"],
      );
      assert.deepEqual(carol.lines((l) => l.includes("only for alice")), []);
      for (const page of [alice, bob]) {
        const markup = (await shown(page)).find((l) => l.text.includes("stays text"))!;
        assert.equal(markup.text, "<img src=x onerror=alert(1)> stays text");
        assert.equal(markup.hasElementChild, false);
        assert.equal(await page.$("#messages img"), null);
      }

      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await alice.screenshot({
        path: new URL("browser-chat.png", ARTIFACTS).pathname as `${string}.png`,
        fullPage: true,
      });

      for (const user of ["alice", "bob"] as const) {
        assert.deepEqual(problems[user].console, [], `${user}'s console before the restart`);
      }
      const carolEnd = await carol.end();
      carol = undefined;
      assert.equal(carolEnd.code, 0, carolEnd.stderr);
      // Every line went end to end: the pages are devices (lobby sender keys, ratchets).
      assert.ok(!carolEnd.stderr.includes("readable by the server"), carolEnd.stderr);
      for (const page of [alice, bob]) {
        const lines = await shown(page);
        assert.ok(
          !lines.some((l) => /readable by the server|cannot decrypt/.test(l.text)),
          JSON.stringify(lines),
        );
      }

      // The server dies and comes back on the same ports: both pages log in again by
      // themselves (the tickets died with it, so with the passwords they hold in memory).
      const before = [await statusText(alice), await statusText(bob)];
      server.child.kill("SIGKILL");
      await server.stop();
      server = await serve(webPort, server.port);
      for (const [i, user, page] of [[0, "alice", alice], [1, "bob", bob]] as const) {
        // A new session: its id (in the status) is not the one before the kill.
        await waitForNewSession(page, user, before[i]);
      }
      // alice's lobby line goes under a sender key for the members her page knows of (PROTOCOL
      // §12.5): it must have heard that bob is back, or bob rightly cannot read it. The server
      // tells the members of a newcomer as it stores the newcomer's device (KEYS_PUBLISHED,
      // then the `members` body to each, in the same step), and whoever publishes later gets
      // the whole online list instead; a /who from alice's page after both is answered after
      // either, on the same session.
      for (const user of ["alice", "bob"]) {
        await server.waitFor(logIs("KEYS_PUBLISHED", { user }), 30_000);
      }
      await alice.click("#who");
      await waitForLine(
        alice,
        (l) => l.author === "*" && l.text === "online: alice, bob",
        "the /who answer after the restart",
      );
      await say(alice, "after the restart");
      await waitForLine(
        bob,
        (l) => l.text === "after the restart",
        "alice's line after the restart",
      );
      assert.equal((await shown(bob)).filter((l) => l.text === "after the restart").length, 1);

      // alice leaves: receipts are exchanged and the page offers the session's files.
      await alice.click("#leave");
      await waitForStatus(alice, /^session ended with receipts/, "alice's leaving");
      const latest = "#archive li:first-child a.download";
      const links = await alice.$$(latest);
      const names = await alice.$$eval(
        latest,
        (as) => as.map((a) => a.getAttribute("download")!),
      );
      assert.equal(names.length, 4, `files offered: ${names}`);
      for (const link of links) await link.click();
      const log = names.find((n) => n.endsWith(".log"))!;
      await waitUntil(
        () =>
          Promise.resolve(
            names.every((n) => {
              try {
                return Deno.statSync(join(downloads, n)).isFile;
              } catch {
                return false;
              }
            }) || undefined,
          ),
        20_000,
        () => Promise.resolve(`downloads: ${[...Deno.readDirSync(downloads)].map((e) => e.name)}`),
      );
      const verified = await runCli(["verify", join(downloads, log), "--ca", `${pki.dir}/ca.pem`]);
      assert.equal(verified.code, 0, verified.stdout + verified.stderr);
      assert.match(verified.stdout, /confirmed by both/);

      for (const user of ["alice", "bob"] as const) {
        const page = user === "alice" ? alice : bob;
        const violations = await page.evaluate<string[]>("globalThis.cspViolations");
        assert.deepEqual(violations, [], `${user}'s page broke its CSP`);
        assert.equal(await page.evaluate<string>("document.cookie"), "", `${user}'s cookies`);
        // While the server was down, Chromium itself logged each refused connection (the
        // WebSocket, and the CRL fetched before it); nothing else.
        assert.deepEqual(
          problems[user].console.filter((m) => !REFUSED_CONNECTION.test(m)),
          [],
          `${user}'s console`,
        );
      }
    } finally {
      await carol?.end().catch(() => {});
      await browser?.close();
      await server.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
      await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
    }
  },
});

/** One page test's world, removed however the test ends. */
interface AliceInPage {
  work: string;
  pki: TestPki;
  /** `serve --web` over `<work>/server` (the one started first: see `restart`). */
  server: ServerProcess;
  /**
   * Stops the server as an operator does (SIGTERM: every session closed with receipts) and
   * starts it again over the same directory and ports; the new one is returned (and stopped
   * at the end).
   */
  restart(): Promise<ServerProcess>;
  serverDir: string;
  /** alice's page: her bundle imported and her account registered from it. */
  alice: Page;
  problems: PageProblems;
  /** Logs a registered CLI user in through `port` (the server's by default), its state in `<work>/<user>-client`. */
  cli(user: "carol" | "dave", port?: number): Promise<LiveClient>;
}

/**
 * Runs `test` with alice in Chromium on a `serve --web` (plus `serverArgs(serverDir)`), the
 * CLI users `cliUsers` registered; `beforeExport` runs on the PKI before alice's bundle is
 * written. Chromium, the CLI clients, the server and every file go however `test` ends.
 */
async function withAliceInPage(
  o: {
    prefix: string;
    users: string[];
    cliUsers: ("carol" | "dave")[];
    serverArgs?: (serverDir: string) => string[];
    beforeExport?: (pki: TestPki) => Promise<void>;
    /** Source text run in alice's page before its own script (see openPage). */
    beforePage?: string;
  },
  test: (lab: AliceInPage) => Promise<void>,
): Promise<void> {
  const work = await Deno.makeTempDir({ prefix: o.prefix });
  const pki = await makePki(o.users, "ed25519");
  let server: ServerProcess | undefined;
  let browser: Browser | undefined;
  const clients: LiveClient[] = [];
  try {
    await buildPage(join(work, "dist"));
    await o.beforeExport?.(pki);
    const bundle = await exportBundle(pki.dir, work, "alice");
    const serverDir = join(work, "server");
    await Deno.mkdir(serverDir);
    const serve = (webPort: number, port: number) =>
      ServerProcess.start({
        pkiDir: pki.dir,
        workDir: serverDir,
        args: [
          "--web",
          String(webPort),
          "--web-root",
          join(work, "dist"),
          "--port",
          String(port),
          ...(o.serverArgs?.(serverDir) ?? []),
        ],
      });
    const started = await serve(0, 0);
    server = started;
    const webPort = Number(
      String((await started.waitFor(logIs("LISTEN_WEB"))).detail).split(":").pop(),
    );
    const restart = async () => {
      await server!.stop();
      server = await serve(webPort, started.port);
      return server;
    };
    for (const user of o.cliUsers) {
      await registerUser(started, pki.dir, user, PASSWORDS[user], join(work, `${user}-client`));
    }
    browser = await launchChromium();
    const problems: PageProblems = { console: [] };
    const alice = await openPage(
      browser,
      `http://127.0.0.1:${webPort}/`,
      problems,
      join(work, "alice-downloads"),
      o.beforePage,
    );
    await joinFromPage(alice, bundle, "alice");
    const cli = async (user: "carol" | "dave", port = started.port) => {
      const client = await LiveClient.login({
        port,
        user,
        password: PASSWORDS[user],
        pkiDir: pki.dir,
        transcripts: join(work, `${user}-client`),
      });
      clients.push(client);
      return client;
    };
    await test({ work, pki, server: started, serverDir, alice, problems, cli, restart });
  } finally {
    for (const client of clients) await client.end().catch(() => {});
    await browser?.close();
    await server?.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
}

/** Logs in again from the page (the identity stays imported), as a returning user does. */
async function loginFromPage(page: Page, user: keyof typeof PASSWORDS): Promise<void> {
  await page.click("input[name=mode][value=login]");
  await page.type("#password", PASSWORDS[user]);
  await submitLogin(page, user, "login");
}

/** Leaves the chat from the page: receipts are exchanged. */
async function leaveFromPage(page: Page, user: string): Promise<void> {
  await page.click("#leave");
  await waitForStatus(page, /^session ended with receipts/, `${user}'s leaving`);
}

Deno.test({
  name: "browser: the page is an end-to-end device: private and lobby lines with the CLI both " +
    "ways, /verify, revoked peers refused from the CRL at /crl, lost state, its own revocation " +
    "adopted by the server reaching the page through /crl, no plaintext at the server",
  ignore: skip,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const privates = [1, 2, 3, 4, 5].map((i) => `private-${i}-${run}`);
    const lobby = [1, 2].map((i) => `lobby-${i}-${run}`);
    await withAliceInPage({
      prefix: "securechat-browser-e2e-",
      users: ["alice", "carol", "dave", "mallory"],
      cliUsers: ["carol", "dave"],
      serverArgs: (serverDir) => ["--keylog", join(serverDir, "keys.log")],
      // A CRL before the export (mallory's), so the bundle carries one: CRL number 1.
      beforeExport: async (pki) =>
        void await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "mallory", 30),
    }, async ({ pki, server, serverDir, alice, problems, cli }) => {
      const keylog = join(serverDir, "keys.log");
      // carol's frames pass a recorder: with the key log, an auditor opens every one of them.
      const proxy = FrameProxy.start(server.port);
      try {
        const carol = await cli("carol", proxy.port);

        // Private lines both ways: a first contact from the page (carol's published prekeys),
        // the answer from the CLI (a ratchet step), one more from the page.
        await say(alice, `/msg carol ${privates[0]}`);
        await carol.waitForLine((l) => l.includes(`alice (private) ✓ ${privates[0]}`));
        await carol.send(`/msg alice ${privates[1]}`);
        await waitForLine(alice, (l) => l.text === privates[1], "carol's private line");
        await say(alice, `/msg carol ${privates[2]}`);
        await carol.waitForLine((l) => l.includes(`alice (private) ✓ ${privates[2]}`));
        // The lobby under sender keys, each way.
        await say(alice, lobby[0]);
        await carol.waitForLine((l) => l.includes(`alice ✓ ${lobby[0]}`));
        await carol.send(lobby[1]);
        await waitForLine(alice, (l) => l.text === lobby[1], "carol's lobby line");
        for (const text of [privates[1], lobby[1]]) {
          const line = (await shown(alice)).filter((l) => l.text === text);
          assert.equal(line.length, 1, `${text} shown once`);
          assert.deepEqual(
            { author: line[0].author, verified: line[0].verified, private: line[0].private },
            { author: "carol", verified: true, private: text === privates[1] },
          );
        }
        assert.ok(
          !(await shown(alice)).some((l) => /readable by the server|cannot decrypt/.test(l.text)),
          JSON.stringify(await shown(alice)),
        );

        // /verify on both sides: the fingerprint of the certificate behind each device's keys.
        const fingerprint = async (user: string) =>
          formatFingerprint(fingerprintOf((await pki.identity(user)).certDer));
        await say(alice, "/verify carol");
        await waitForLine(
          alice,
          (l) => l.text.startsWith("compare the fingerprint with carol"),
          "/verify",
        );
        const carolDevices = (await shown(alice)).filter((l) =>
          /^carol device [0-9a-f]{16}: end-to-end keys signed by certificate /.test(l.text)
        );
        assert.equal(carolDevices.length, 1, JSON.stringify(carolDevices));
        assert.ok(carolDevices[0].text.endsWith(await fingerprint("carol")));
        await carol.send("/verify alice");
        await carol.waitForLine((l) => l.includes("compare the fingerprint with alice"));
        const aliceDevices = carol.lines((l) =>
          /alice device [0-9a-f]{16}: end-to-end keys/.test(l)
        );
        assert.equal(aliceDevices.length, 1, "one device: this browser");
        assert.ok(aliceDevices[0].endsWith(await fingerprint("alice")), aliceDevices[0]);
        await say(alice, "/verify dave");
        await waitForLine(
          alice,
          (l) => l.text.startsWith("compare the fingerprint with dave"),
          "dave",
        );

        // dave is revoked, and the page hears of it from /crl while this server keeps handing
        // out dave's keys, as a malicious one would (ours drops a revoked certificate's devices
        // once it adopts the CRL, PROTOCOL §12.6, so the CA's new CRL is made in a copy of its
        // directory, which the server does not watch, and the page's /crl answers with it). The
        // page, still in the same session, takes it for /verify, checks it under the CA, and
        // refuses dave's keys by itself.
        const caCopy = await Deno.makeTempDir({ prefix: "securechat-browser-ca-" });
        const copied = await new Deno.Command("cp", { args: ["-a", `${pki.dir}/.`, caCopy] })
          .output();
        assert.ok(copied.success, new TextDecoder().decode(copied.stderr));
        await revokeCertificates(caCopy, await loadCaSigner(caCopy), "dave", 30);
        const newerCrl = await readCrlDer(join(caCopy, "ca.crl"));
        await Deno.remove(caCopy, { recursive: true });
        assert.ok(newerCrl, "the CA's new CRL");
        await alice.evaluate(`(() => {
          const crl = new Uint8Array(${JSON.stringify([...newerCrl])});
          const fetchFromServer = window.fetch;
          window.fetch = (url, init) => String(url).endsWith("/crl")
            ? Promise.resolve(new Response(crl, { status: 200 }))
            : fetchFromServer(url, init);
        })()`);
        const before = (await shown(alice)).length;
        await say(alice, "/verify dave");
        await waitForLine(
          alice,
          (l) => l.text.startsWith("dave's end-to-end keys refused: ") && /revoked/.test(l.text),
          "dave refused",
        );
        await say(alice, "/msg dave are you there");
        await waitForLine(alice, (l) => l.text.startsWith("not sent to dave: "), "no line to dave");
        assert.ok(
          !(await shown(alice)).slice(before).some((l) => l.text.includes("signed by certificate")),
        );
        // The page keeps the CRL it took (IndexedDB, beside the identity): a reload starts from
        // it, and a server serving an older one could not undo dave's revocation here.
        await leaveFromPage(alice, "alice");
        await alice.reload({ waitUntil: "load" });
        await waitForStatus(alice, /^ready$/, "alice's reloaded page");
        assert.deepEqual(await storedCrl(alice), newerCrl);

        // This browser loses its end-to-end state (site data cleared): the page says so, starts
        // again as a new device, and the conversation goes on both ways.
        await setE2eRecords(alice, {}); // the page's end-to-end state, gone
        await loginFromPage(alice, "alice");
        await waitForLine(
          alice,
          (l) => l.author === "*" && l.text.includes("end-to-end keys for alice are missing"),
          "the lost-state notice",
        );
        await say(alice, `/msg carol ${privates[3]}`);
        await carol.waitForLine((l) => l.includes(`alice (private) ✓ ${privates[3]}`));
        await carol.send(`/msg alice ${privates[4]}`);
        await waitForLine(alice, (l) => l.text === privates[4], "carol's line to the new device");

        // The server adopts a CRL revoking alice while her page is open (PKI.md "Revocation in a
        // running server"): her session ends with REVOKED. The page's next login reads that CRL
        // from /crl (PKI.md "The page's CRL": it holds number 2, the copy's; the CA's own file
        // revokes dave again, number 2, then alice, number 3) and keeps it, and the server
        // refuses her certificate. Marked before the file changes: the 5-second check may adopt
        // it before the SIGHUP.
        const mark = server.mark();
        const signer = await loadCaSigner(pki.dir);
        await revokeCertificates(pki.dir, signer, "dave", 30);
        await revokeCertificates(pki.dir, signer, "alice", 30);
        server.child.kill("SIGHUP");
        await server.waitFor((e) => e.event === "CRL_LOADED" && e.number === "3", 15_000, mark);
        await waitForLine(alice, (l) => l.text.startsWith("REVOKED: "), "alice's session's end");
        await waitForStatus(alice, /^session ended \(REVOKED\)$/, "alice's page once revoked");
        await alice.click("input[name=mode][value=login]");
        await alice.type("#password", PASSWORDS.alice);
        await alice.click("#login-form button[type=submit]");
        await waitForStatus(alice, /^not connected \(BAD_CERT\)$/, "alice's login once revoked");
        assert.deepEqual(await storedCrl(alice), await readCrlDer(join(pki.dir, "ca.crl")));

        assert.deepEqual(problems.console, [], "alice's console");
        assert.deepEqual(await alice.evaluate<string[]>("globalThis.cspViolations"), []);
        const carolEnd = await carol.end();
        assert.equal(carolEnd.code, 0, carolEnd.stderr);
        assert.ok(!carolEnd.stderr.includes("readable by the server"), carolEnd.stderr);
        await server.stop();

        // No line typed in the page or on the CLI is in anything the server wrote or logged.
        const canaries = [...privates, ...lobby];
        const output = [...server.logs.map((e) => JSON.stringify(e)), ...server.otherOutput]
          .join("\n");
        const written = await assertNoCanaries(serverDir, output, canaries);
        assert.ok(written.some((p) => p.endsWith(".log") && p.includes("transcripts")));
        // Nor in any frame to or from carol, opened with the key log: the page's lines reached
        // her end to end (an envelope, no content key), as hers left.
        const opened = decryptWithKeylog(proxy.frames, await Deno.readTextFile(keylog));
        let relayedEndToEnd = 0;
        for (const { message } of opened) {
          if (message.type !== "msg" && message.type !== "relay") continue;
          // A relay and a user's msg carry their records each with its carrier (PROTOCOL §6.3,
          // §6.4); the server's msg one record and its key.
          const items = "records" in message
            ? message.records as Record<string, unknown>[]
            : [message];
          for (const item of items) {
            const record = decodeRecord(item.record as never);
            if (record.to === "server" || message.type === "msg" && record.dir !== "c2s") continue;
            assert.ok(!("k" in item), `a ${message.type} to ${record.to} with its content key`);
            assert.ok("e2e" in item, `a ${message.type} to ${record.to} without an envelope`);
            if (message.type === "relay") relayedEndToEnd++;
          }
        }
        // From the page: privates 1, 3 and 4, and lobby 1 (more with sender-key records).
        assert.ok(relayedEndToEnd >= 4, `relays to carol end to end: ${relayedEndToEnd}`);
        const everything = JSON.stringify(opened);
        for (const canary of canaries) {
          assert.ok(!everything.includes(canary), `${canary} on the wire`);
        }
      } finally {
        await proxy.close();
      }
    });
  },
});

/** The CRL this browser keeps beside its identity (PKI.md "The page's CRL"), DER. */
async function storedCrl(page: Page): Promise<Uint8Array> {
  return new Uint8Array(
    await page.evaluate<number[]>(`new Promise((resolve, reject) => {
      const open = indexedDB.open("securechat");
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const get = open.result.transaction("identity").objectStore("identity").get("current");
        get.onsuccess = () => { open.result.close(); resolve([...get.result.crlDer]); };
      };
    })`),
  );
}

/** The page's `e2e` store (PROTOCOL §12.7), record by record, as this browser keeps it. */
async function e2eRecords(page: Page): Promise<Record<string, string>> {
  return await page.evaluate<Record<string, string>>(`new Promise((resolve, reject) => {
    const open = indexedDB.open("securechat");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const store = open.result.transaction("e2e").objectStore("e2e");
      const keys = store.getAllKeys();
      const values = store.getAll();
      values.onsuccess = () => {
        open.result.close();
        resolve(Object.fromEntries(keys.result.map((key, i) => [key, values.result[i]])));
      };
      values.onerror = () => reject(values.error);
    };
  })`);
}

/** Replaces the page's `e2e` store with `records`: what a crash at some point would leave. */
async function setE2eRecords(page: Page, records: Record<string, string>): Promise<void> {
  await page.evaluate(`new Promise((resolve, reject) => {
    const open = indexedDB.open("securechat");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction("e2e", "readwrite");
      const store = tx.objectStore("e2e");
      store.clear();
      for (const [key, value] of Object.entries(${JSON.stringify(records)})) store.put(value, key);
      tx.oncomplete = () => { open.result.close(); resolve(); };
      tx.onerror = () => reject(tx.error);
    };
  })`);
}

/** The identity key (hex) of the device state `sealed` holds, opened with `password`. */
function deviceKeyOf(sealed: string, password: string): string {
  return (StateSeal.open(sealed, password, "the page's state").value as { ik: string }).ik;
}

/**
 * A conversation a password change must not break: a first contact each way between alice's
 * page and carol's CLI (a ratchet each). Returns alice's device, its sealed state and the
 * identity key that state holds.
 */
async function conversationToKeep(alice: Page, carol: LiveClient) {
  await say(alice, "/msg carol before the change");
  await carol.waitForLine((l) => l.includes("alice (private) ✓ before the change"));
  await carol.send("/msg alice answer before");
  await waitForLine(alice, (l) => l.text === "answer before", "carol's answer");
  const device = (await shown(alice)).find(isPublication)!.text.split(" ").pop()!;
  const sealed = (await e2eRecords(alice)).alice;
  return { device, sealed, identityKey: deviceKeyOf(sealed, PASSWORDS.alice) };
}

/** Fills the page's password-change form, as a user does after typing /passwd. */
async function passwdFromPage(
  page: Page,
  current: string,
  next: string,
  repeat = next,
): Promise<void> {
  await say(page, "/passwd");
  await waitUntil(
    async () =>
      await page.$eval("#passwd-form", (f) => f.getAttribute("hidden") === null) || undefined,
    10_000,
    () => Promise.resolve("the password-change form"),
  );
  await page.type("#passwd-current", current);
  await page.type("#passwd-new", next);
  await page.type("#passwd-repeat", repeat);
  await page.click("#passwd-form button[type=submit]");
}

Deno.test({
  name: "browser: /passwd in the page checks first, changes the password, and this browser's " +
    "end-to-end state follows it (the same device, also after a crash before it was moved)",
  ignore: skip,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const NEW = "alice-password-2";
    await withAliceInPage({
      prefix: "securechat-browser-passwd-",
      users: ["alice", "carol"],
      cliUsers: ["carol"],
    }, async ({ server, alice, problems, cli }) => {
      const carol = await cli("carol");
      const { device, sealed: sealedBefore, identityKey } = await conversationToKeep(alice, carol);
      const notChanged = (why: RegExp) => (l: ShownLine) =>
        l.text.startsWith("password not changed: ") && why.test(l.text);

      // Refused here, never sent: the repeat differs; the new password breaks the rules.
      await passwdFromPage(alice, PASSWORDS.alice, NEW, "alice-password-3");
      await waitForLine(alice, notChanged(/the passwords differ/), "a differing repeat");
      await passwdFromPage(alice, PASSWORDS.alice, "short");
      await waitForLine(alice, notChanged(/8 to 1024 bytes/), "a short new password");
      // Refused by the server: a wrong current password. The state stays under the old one alone.
      await passwdFromPage(alice, "not-alices-password", NEW);
      await waitForLine(alice, notChanged(/AUTH_FAIL/), "a wrong current password");
      // With the CLI's hint for the code, from the one table both use (lib/e2e/chat.ts).
      await waitForLine(
        alice,
        (l) => l.text.startsWith("hint: the current password was not right"),
        "the hint after a wrong current password",
      );
      assert.deepEqual(Object.keys(await e2eRecords(alice)), ["alice"]);
      assert.ok(!server.logs.some((e) => e.event === "PASSWORD_CHANGED"));

      await passwdFromPage(alice, PASSWORDS.alice, NEW);
      await waitForLine(
        alice,
        (l) => l.author === "*" && l.text.startsWith("password changed: "),
        "the change",
      );
      assert.ok(server.logs.some((e) => e.event === "PASSWORD_CHANGED" && e.user === "alice"));
      // The same device's state, now under the new password alone; no password left in a field.
      const after = await e2eRecords(alice);
      assert.deepEqual(Object.keys(after), ["alice"]);
      assert.equal(deviceKeyOf(after.alice, NEW), identityKey);
      assert.throws(() => deviceKeyOf(after.alice, PASSWORDS.alice), /wrong password/);
      assert.equal(await alice.$eval("#passwd-form", (f) => f.getAttribute("hidden")), "");
      assert.deepEqual(
        await alice.evaluate<string[]>(
          `[...document.querySelectorAll("#passwd-form input")].map((i) => i.value)`,
        ),
        ["", "", ""],
      );
      // The chat goes on, and none of the passwords typed went to anyone.
      await say(alice, "/msg carol after the change");
      await carol.waitForLine((l) => l.includes("alice (private) ✓ after the change"));
      for (const secret of [PASSWORDS.alice, NEW, "not-alices-password", "alice-password-3"]) {
        assert.ok(!carol.stdout.join("\n").includes(secret), `"${secret}" reached carol`);
        assert.ok(!JSON.stringify(await shown(alice)).includes(secret), `"${secret}" shown`);
      }

      // A crash after the server changed the password and before the state was moved over:
      // the state still under the old password, its copy under the new one beside it. The next
      // login (the new password) opens the copy and keeps it: the same device, its
      // conversations intact (carol's next line opens here).
      await leaveFromPage(alice, "alice");
      await setE2eRecords(alice, { alice: sealedBefore, "alice:next": after.alice });
      await alice.reload({ waitUntil: "load" });
      await waitForStatus(alice, /^ready$/, "alice's reloaded page");
      await alice.click("input[name=mode][value=login]");
      await alice.type("#password", NEW);
      await submitLogin(alice, "alice", "login with the new password");
      const lines = await shown(alice);
      assert.equal(lines.filter(isPublication).at(-1)!.text.split(" ").pop(), device);
      assert.ok(!lines.some((l) => l.text.includes("are missing")), JSON.stringify(lines));
      const healed = await e2eRecords(alice);
      assert.deepEqual(Object.keys(healed), ["alice"]);
      assert.equal(deviceKeyOf(healed.alice, NEW), identityKey);
      await carol.send("/msg alice to the same device");
      await waitForLine(alice, (l) => l.text === "to the same device", "carol's next line");
      assert.ok(
        !(await shown(alice)).some((l) => /cannot decrypt/.test(l.text)),
        JSON.stringify(await shown(alice)),
      );

      assert.deepEqual(problems.console, [], "alice's console");
      assert.deepEqual(await alice.evaluate<string[]>("globalThis.cspViolations"), []);
      await leaveFromPage(alice, "alice");
    });
  },
});

Deno.test({
  name: "browser: the page logs in again after a server closed its session on stopping, not " +
    "after a takeover, nor after a close with a code (the server's certificate revoked), " +
    "which it shows",
  ignore: skip,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withAliceInPage({
      prefix: "securechat-browser-close-",
      users: ["alice"],
      cliUsers: [],
    }, async ({ work, pki, alice, problems, restart }) => {
      // The operator restarts the server: SIGTERM closes every session with receipts first. The
      // page comes back by itself, as `connect --reconnect` does.
      const first = await statusText(alice);
      const server = await restart();
      await waitForNewSession(alice, "alice", first);
      await waitForLine(
        alice,
        (l) => l.text === "the server closed the session; reconnecting",
        "the page's word on the server's close",
      );

      // alice logs in elsewhere (the CLI, with her certificate): the server closes the page's
      // session with a close coded SESSION_TAKEN_OVER (PROTOCOL §7.1; its notice is display
      // only). The page says so and does not take the session back: its
      // status is the one of a session that ended for good (a reconnection would say
      // "reconnecting in …" and then "logged in"), and the login form is offered again.
      const elsewhere = await LiveClient.login({
        port: server.port,
        user: "alice",
        password: PASSWORDS.alice,
        pkiDir: pki.dir,
        transcripts: join(work, "alice-cli"),
      });
      try {
        await waitForLine(
          alice,
          (l) =>
            l.author === "*" &&
            l.text ===
              "session taken over: this user logged in again elsewhere (SESSION_TAKEN_OVER)",
          "the page's word on the takeover's close code",
        );
        await waitForStatus(alice, /^session ended with receipts$/, "the page after a takeover");
        assert.equal(await alice.$eval("#login-section", (e) => e.getAttribute("hidden")), null);
      } finally {
        const ended = await elsewhere.end();
        assert.equal(ended.code, 0, ended.stderr);
      }
      assert.ok(
        !(await shown(alice)).some((l) =>
          l.text.includes("reconnecting") && l.text !==
            "the server closed the session; reconnecting"
        ),
        JSON.stringify(await shown(alice)),
      );

      // The server's own certificate is revoked (PROTOCOL §5.2): the server closes the session
      // with receipts and the code. The page shows the code and the server's reason, does not
      // reconnect, and a new login meets the same refusal at once (no backoff loop).
      await loginFromPage(alice, "alice");
      await revokeCertificates(pki.dir, await loadCaSigner(pki.dir), "server", 30);
      server.child.kill("SIGHUP");
      await server.waitFor(logIs("SERVER_CERT_REVOKED"), 15_000);
      await waitForLine(
        alice,
        (l) => l.text.startsWith("SERVER_CERT_REVOKED: ") && /revoked/.test(l.text.slice(20)),
        "the close code",
      );
      await waitForStatus(alice, /^session ended with receipts$/, "the page after the close");
      const shownBefore = (await shown(alice)).length;
      await alice.click("input[name=mode][value=login]");
      await alice.type("#password", PASSWORDS.alice);
      await alice.click("#login-form button[type=submit]");
      await waitForStatus(alice, /^not connected \(SERVER_CERT_REVOKED\)$/, "a login after");
      // (Only after the close: while the server restarted above, the page's attempts met a
      // closed port, IO_ERROR, and tried again, as they should.)
      const attempts = (await shown(alice)).slice(shownBefore)
        .filter((l) => l.text.startsWith("cannot log in: "));
      assert.equal(
        attempts.length,
        1,
        `one attempt, not a backoff loop: ${JSON.stringify(attempts)}`,
      );

      assert.deepEqual(problems.console.filter((m) => !REFUSED_CONNECTION.test(m)), []);
      assert.deepEqual(await alice.evaluate<string[]>("globalThis.cspViolations"), []);
    });
  },
});

/**
 * Run before the page's script: this browser's WebCrypto as one without ML-KEM — the KEM
 * methods absent, and ML-KEM refused by key generation and import as a browser that does not
 * know the algorithm refuses it. Only the test's browser can do this to a page: nothing the
 * server sends, nor any message, can choose the page's backend.
 */
const WITHOUT_WEBCRYPTO_MLKEM = `
  delete SubtleCrypto.prototype.encapsulateBits;
  delete SubtleCrypto.prototype.decapsulateBits;
  delete SubtleCrypto.prototype.encapsulateKey;
  delete SubtleCrypto.prototype.decapsulateKey;
  for (const method of ["generateKey", "importKey"]) {
    const original = SubtleCrypto.prototype[method];
    SubtleCrypto.prototype[method] = function (...args) {
      const algorithm = method === "generateKey" ? args[0] : args[2];
      const name = typeof algorithm === "string" ? algorithm : algorithm?.name;
      if (/^ML-KEM/i.test(String(name))) {
        return Promise.reject(new DOMException("Unrecognized name", "NotSupportedError"));
      }
      return original.apply(this, args);
    };
  }
`;

Deno.test({
  name: "browser: a browser without ML-KEM in WebCrypto runs the page on @noble/post-quantum: " +
    "the hybrid handshake, and end-to-end first contacts both ways with the CLI",
  ignore: skip,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await withAliceInPage({
      prefix: "securechat-browser-noble-",
      users: ["alice", "carol"],
      cliUsers: ["carol"],
      beforePage: WITHOUT_WEBCRYPTO_MLKEM,
    }, async ({ alice, problems, cli }) => {
      // alice registered and published from this page: her handshake offered and ran
      // x25519mlkem768 (every client's first group, PROTOCOL §4.1), and her PQ prekey was made,
      // with no ML-KEM in WebCrypto to make them.
      assert.equal(
        await alice.evaluate<string>("typeof crypto.subtle.encapsulateBits"),
        "undefined",
      );
      assert.equal(
        await alice.evaluate<string>(
          `crypto.subtle.generateKey("ML-KEM-768", false, ["decapsulateBits"])
          .then(() => "generated", (e) => e.name)`,
        ),
        "NotSupportedError",
      );
      const carol = await cli("carol");
      // A first contact from the page encapsulates to carol's PQ prekey (noble here); carol's
      // answer is a ratchet step. A first contact from carol to a new device of alice's
      // decapsulates with the page's noble key: the page loses its state and starts again.
      await say(alice, "/msg carol first contact from a page on noble");
      await carol.waitForLine((l) =>
        l.includes("alice (private) ✓ first contact from a page on noble")
      );
      await carol.send("/msg alice answer to the page on noble");
      await waitForLine(alice, (l) => l.text === "answer to the page on noble", "carol's answer");
      await say(alice, "lobby line from a page on noble");
      await carol.waitForLine((l) => l.includes("alice ✓ lobby line from a page on noble"));
      await leaveFromPage(alice, "alice");
      await setE2eRecords(alice, {}); // the page's end-to-end state, gone
      await loginFromPage(alice, "alice");
      // carol's client refetches alice's devices when the server says she joined, which it
      // does as it stores the new device (before it confirms it to the page): a /who from
      // carol after that confirmation is answered after it.
      const from = carol.stdout.length;
      await carol.send("/who");
      await carol.waitForLine((l) => l.includes("* online: alice, carol"), 10_000, from);
      await carol.send("/msg alice first contact to the new device");
      await waitForLine(
        alice,
        (l) => l.text === "first contact to the new device" && l.verified,
        "carol's first contact to the page's new device",
      );
      const lines = await shown(alice);
      assert.ok(
        !lines.some((l) => /readable by the server|cannot decrypt/.test(l.text)),
        JSON.stringify(lines),
      );
      assert.deepEqual(problems.console, [], "alice's console");
      assert.deepEqual(await alice.evaluate<string[]>("globalThis.cspViolations"), []);
      await leaveFromPage(alice, "alice");
    });
  },
});

Deno.test({
  name: "browser: a password changed from another client: the page's end-to-end state, still " +
    "under the old one, opens with it when the user gives it and is sealed again under the " +
    "new one (the same device, its conversations kept)",
  ignore: skip,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const NEW = "alice-password-2";
    await withAliceInPage({
      prefix: "securechat-browser-reseal-",
      users: ["alice", "carol"],
      cliUsers: ["carol"],
    }, async ({ work, serverDir, alice, problems, cli }) => {
      const carol = await cli("carol");
      const { device, identityKey } = await conversationToKeep(alice, carol);
      await leaveFromPage(alice, "alice");

      // Elsewhere, alice's password changes (here by the operator's `user passwd`: the same
      // change in the account store as a /passwd from her CLI; this browser is not told).
      const file = join(work, "new-password");
      await Deno.writeTextFile(file, NEW + "\n");
      const changed = await runCli([
        "user",
        "passwd",
        "alice",
        "--password-file",
        file,
        "--db",
        `sqlite:${serverDir}/t.db`,
      ]);
      assert.equal(changed.code, 0, changed.stderr);

      // The new password logs in, but this browser's state does not open with it: the page
      // says so beside the login form and asks for the previous password; nothing changed.
      const sealed = (await e2eRecords(alice)).alice;
      const previousShown = async () =>
        await alice.$eval("#previous-section", (e) => e.getAttribute("hidden")) === null;
      assert.equal(await previousShown(), false, "asked for before it is needed");
      const attempt = async (previous?: string) => {
        await alice.click("input[name=mode][value=login]");
        await alice.type("#password", NEW);
        if (previous !== undefined) await alice.type("#previous-password", previous);
        await alice.click("#login-form button[type=submit]");
      };
      await attempt();
      await waitForStatus(
        alice,
        /^not connected \(DECRYPT_FAIL\)$/,
        "the state under the old password",
      );
      assert.equal(await previousShown(), true);
      assert.match(
        await alice.$eval("#previous-problem", (e) => e.textContent ?? ""),
        /do not open with your password/,
      );
      assert.deepEqual(await e2eRecords(alice), { alice: sealed });

      // A wrong previous password opens nothing and changes nothing.
      await attempt("not-alices-old-password");
      await waitUntil(
        async () =>
          /neither your password nor the previous one/.test(
            await alice.$eval("#previous-problem", (e) => e.textContent ?? ""),
          ) || undefined,
        30_000,
        () => Promise.resolve("the refusal of a wrong previous password"),
      );
      assert.match(await statusText(alice), /^not connected \(DECRYPT_FAIL\)$/);
      assert.deepEqual(await e2eRecords(alice), { alice: sealed });

      // The right one: the state opens here and is sealed under the new password alone; the
      // same device logs in, and carol's next line in the same conversation opens.
      await attempt(PASSWORDS.alice);
      await waitForStatus(alice, /^logged in as alice /, "the login with the previous password");
      await waitForLine(
        alice,
        (l) => l.author === "*" && l.text.startsWith("this browser's end-to-end keys are sealed"),
        "the re-seal notice",
      );
      await waitUntil(
        async () => (await shown(alice)).filter(isPublication).length > 1 || undefined,
        20_000,
        () => Promise.resolve("alice's keys published again"),
      );
      assert.equal(
        (await shown(alice)).filter(isPublication).at(-1)!.text.split(" ").pop(),
        device,
      );
      const after = await e2eRecords(alice);
      assert.deepEqual(Object.keys(after), ["alice"]);
      assert.equal(deviceKeyOf(after.alice, NEW), identityKey);
      assert.throws(() => deviceKeyOf(after.alice, PASSWORDS.alice), /wrong password/);
      assert.equal(await previousShown(), false);
      assert.equal(
        await alice.evaluate<string>(`document.getElementById("previous-password").value`),
        "",
      );
      await carol.send("/msg alice after the change");
      await waitForLine(alice, (l) => l.text === "after the change" && l.verified, "carol's line");
      const lines = await shown(alice);
      // From the re-seal on (the refused logins before it rightly said DECRYPT_FAIL).
      const resealed = lines.findIndex((l) =>
        l.text.startsWith("this browser's end-to-end keys are sealed")
      );
      assert.ok(
        !lines.slice(resealed).some((l) => /cannot decrypt|are missing/.test(l.text)),
        JSON.stringify(lines),
      );
      // No password typed went to anyone or onto the page.
      for (const secret of [PASSWORDS.alice, NEW, "not-alices-old-password"]) {
        assert.ok(!carol.stdout.join("\n").includes(secret), `"${secret}" reached carol`);
        assert.ok(!JSON.stringify(lines).includes(secret), `"${secret}" shown`);
      }
      assert.deepEqual(problems.console, [], "alice's console");
      assert.deepEqual(await alice.evaluate<string[]>("globalThis.cspViolations"), []);
      await leaveFromPage(alice, "alice");
    });
  },
});
