/**
 * Revocation reaching a running server (issue 11 item 2): the CRL file is checked for
 * changes every `intervalMs` (and at once on `reload()`, which serve calls on SIGHUP); a
 * new CRL is validated before it replaces the one in force (TrustStore.updateCrl), and the
 * serials it newly revokes are handed to `onRevoked` so their live sessions can be ended.
 * A refused CRL is logged and the old one stays. Polling a stat() rather than watching
 * inotify survives editors, atomic renames and network file systems alike.
 *
 * Log events: CRL_LOADED, CRL_REFUSED, REVOCATION_OFF (no CRL file), CRL_LAPSING (within
 * CRL_WARN_DAYS of nextUpdate; repeated every WARN_REPEAT_MS), CRL_LAPSED (every client
 * certificate is now refused until a fresh CRL arrives).
 */
import { codeOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import { CRL_WARN_DAYS, crlDaysLeft } from "../pki/crl.ts";
import type { TrustStore } from "../pki/validate.ts";

/** How often the CRL file is looked at: `cert revoke` tells the operator this bound. */
export const DEFAULT_CRL_CHECK_MS = 5_000;
const WARN_REPEAT_MS = 6 * 60 * 60 * 1000;

export interface CrlWatcherOptions {
  path: string;
  trust: TrustStore;
  log: Logger;
  intervalMs?: number;
  /** Called with the serials a newly adopted CRL revokes that the previous one did not. */
  onRevoked(serials: Set<string>): void;
}

/** What identifies one version of the file without reading it. */
type FileStamp = string;

export class CrlWatcher {
  readonly #opts: CrlWatcherOptions;
  #stamp?: FileStamp;
  #timer?: ReturnType<typeof setInterval>;
  #lastWarning = -Infinity;
  #lapsed = false;
  /** Serialises reloads: a SIGHUP during a poll waits for it. */
  #running: Promise<void> = Promise.resolve();

  constructor(opts: CrlWatcherOptions) {
    this.#opts = opts;
  }

  /** Reports the state at start (REVOCATION_OFF when there is no CRL) and starts polling. */
  async start(): Promise<void> {
    const { trust, log, path } = this.#opts;
    this.#stamp = await stampOf(path);
    if (trust.crl) {
      log("CRL_LOADED", crlFields(trust, path));
    } else {
      log("REVOCATION_OFF", {
        detail: `no CRL at ${path}: revoked certificates are NOT refused until one is there`,
      });
    }
    this.#warnIfLapsing(new Date());
    this.#timer = setInterval(
      () => void this.reload(false),
      this.#opts.intervalMs ?? DEFAULT_CRL_CHECK_MS,
    );
    Deno.unrefTimer(this.#timer);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /**
   * Looks at the file now: adopts it if it changed (or always, when `force`) and passes.
   * Never throws: every outcome is a log line.
   */
  reload(force = true): Promise<void> {
    this.#running = this.#running.then(() => this.#reload(force)).catch((error) => {
      this.#opts.log("INTERNAL", { detail: `CRL reload: ${String(error)}` });
    });
    return this.#running;
  }

  async #reload(force: boolean): Promise<void> {
    const { trust, log, path } = this.#opts;
    const now = new Date();
    const stamp = await stampOf(path);
    const changed = stamp !== this.#stamp;
    this.#stamp = stamp;
    if (changed || force) {
      if (stamp === undefined) {
        if (changed) {
          log("REVOCATION_OFF", {
            detail: `${path} is gone: the CRL loaded earlier stays in force`,
          });
        }
      } else {
        try {
          const newly = await trust.updateCrl(await Deno.readTextFile(path), now);
          if (newly !== null) {
            this.#lapsed = false;
            this.#lastWarning = -Infinity;
            log("CRL_LOADED", { ...crlFields(trust, path), newly_revoked: newly.size });
            if (newly.size > 0) this.#opts.onRevoked(newly);
          }
        } catch (error) {
          log("CRL_REFUSED", {
            code: codeOf(error),
            detail: `${path}: ${(error as Error).message}; the CRL in force stays`,
          });
        }
      }
    }
    this.#warnIfLapsing(now);
  }

  #warnIfLapsing(now: Date): void {
    const { trust, log, path } = this.#opts;
    if (!trust.crl) return;
    const days = crlDaysLeft(trust.crl, now);
    if (days < 0) {
      if (this.#lapsed) return;
      this.#lapsed = true;
      log("CRL_LAPSED", {
        ...crlFields(trust, path),
        detail: "every client certificate is refused (BAD_CERT) until a fresh CRL is in place: " +
          "run `securechat cert crl` (this server picks it up by itself)",
      });
    } else if (days < CRL_WARN_DAYS && now.getTime() - this.#lastWarning >= WARN_REPEAT_MS) {
      this.#lastWarning = now.getTime();
      log("CRL_LAPSING", {
        ...crlFields(trust, path),
        detail: `the CRL lapses in ${days.toFixed(1)} days; then every login fails: ` +
          "run `securechat cert crl` before then",
      });
    }
  }
}

function crlFields(trust: TrustStore, path: string) {
  const crl = trust.crl!;
  return {
    crl: path,
    number: String(crl.crlNumber),
    revoked: crl.revoked.size,
    next_update: crl.nextUpdate?.toISOString(),
  };
}

async function stampOf(path: string): Promise<FileStamp | undefined> {
  try {
    const info = await Deno.stat(path);
    return `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
  } catch {
    return undefined;
  }
}
