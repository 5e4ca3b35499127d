/**
 * Debian's Chromium, headless, through `npm:puppeteer-core` (pinned in deno.json). The package
 * is imported at run time and typed here by the little the tests use: its own declarations
 * pull @types/node into the whole type-checked program, where they replace Deno's node types.
 */

export const CHROMIUM = "/usr/bin/chromium";

/** Why the browser tests cannot run here, or undefined when they can. */
export function chromiumMissing(): string | undefined {
  try {
    Deno.statSync(CHROMIUM);
    return undefined;
  } catch {
    return `${CHROMIUM} is absent (apt-get install chromium)`;
  }
}

/** The DOM as the tests' in-page callbacks read it. */
export interface DomElement {
  textContent: string | null;
  tagName: string;
  lastChild: { textContent: string | null } | null;
  children: Iterable<DomElement>;
  querySelector(selector: string): DomElement | null;
  getAttribute(name: string): string | null;
}

export interface ElementHandle {
  uploadFile(...paths: string[]): Promise<void>;
  click(): Promise<void>;
}

export interface HttpResponse {
  status(): number;
  headers(): Record<string, string>;
}

export interface Page {
  on(event: "console", listener: (message: { type(): string; text(): string }) => void): void;
  on(event: "pageerror", listener: (error: Error) => void): void;
  /** A script (source text) run in every document before the page's own. */
  evaluateOnNewDocument(source: string): Promise<unknown>;
  goto(url: string, options?: { waitUntil?: "load" }): Promise<HttpResponse | null>;
  reload(options?: { waitUntil?: "load" }): Promise<HttpResponse | null>;
  $(selector: string): Promise<ElementHandle | null>;
  $$(selector: string): Promise<ElementHandle[]>;
  $eval<T>(selector: string, read: (element: DomElement) => T): Promise<T>;
  $$eval<T>(selector: string, read: (elements: DomElement[]) => T): Promise<T>;
  /** Evaluates an expression (source text) in the page. */
  evaluate<T>(expression: string): Promise<T>;
  type(selector: string, text: string): Promise<void>;
  click(selector: string): Promise<void>;
  keyboard: { press(key: string): Promise<void> };
  screenshot(options: { path: string; fullPage?: boolean }): Promise<unknown>;
}

export interface Browser {
  /** A fresh profile: its own storage (IndexedDB), its own downloads folder. */
  createBrowserContext(options?: {
    downloadBehavior?: { policy: "allow"; downloadPath: string };
  }): Promise<{ newPage(): Promise<Page> }>;
  close(): Promise<void>;
}

/** Chromium headless; root needs --no-sandbox (CI runs as root). */
export async function launchChromium(): Promise<Browser> {
  const specifier = "puppeteer-core";
  const { default: puppeteer } = await import(specifier);
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  }) as Browser;
}
