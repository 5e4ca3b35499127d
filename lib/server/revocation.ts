/**
 * Revocation reaching a running server (issue 11 item 2): the CRL file is checked for
 * changes every `intervalMs` (and at once on `reload()`, which serve calls on SIGHUP); a
 * new CRL is validated before it replaces the one in force (TrustStore.updateCrl), and the
 * serials it newly revokes are handed to `onRevoked` so their live sessions can be ended.
 * A refused CRL is logged and the old one stays. Polling a stat() rather than watching
 * inotify survives editors, atomic renames and network file systems alike.
 *
 * In a cluster (docs/DEPLOY.md §4.6) the CRL also travels between nodes: one adopted from the
 * file is shared, and one another node shared is offered here and held to the same test — our
 * CA's signature, current, newer than the one in force — before it ends anyone's session. A
 * shared value that is no CRL of our CA, or older than ours, is replaced with ours; nothing
 * else is, so two nodes can never take turns overwriting each other.
 *
 * Log events: CRL_LOADED (with `source`: file or cluster), CRL_REFUSED (with the code: STALE
 * for an older CRL, BAD_CERT for anything else), CRL_SHARED, REVOCATION_OFF (no CRL file),
 * CRL_LAPSING (within CRL_WARN_DAYS of nextUpdate; repeated every WARN_REPEAT_MS), CRL_LAPSED
 * (every client certificate is now refused until a fresh CRL arrives).
 */
import { codeOf } from "../errors.ts";
import type { Logger } from "../log.ts";
import { CRL_WARN_DAYS, crlDaysLeft, type ParsedCrl } from "../pki/crl.ts";
import type { TrustStore } from "../pki/validate.ts";
import { pemDecode } from "../pki/pem.ts";
import type { SharedCrl } from "../cluster/crl_share.ts";

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
  /**
   * In a cluster: puts a CRL where the other nodes follow it; false when another was put
   * meanwhile (offerShared() then gets that one).
   */
  share?(der: Uint8Array): Promise<boolean>;
}

/** What identifies one version of the file without reading it. */
type FileStamp = string;

export class CrlWatcher {
  readonly #opts: CrlWatcherOptions;
  #stamp?: FileStamp;
  /**
   * A CRL in force that could not be shared (NATS unreachable): tried again at every check
   * of the file, so a revocation dropped during an outage still reaches the other nodes.
   */
  #unshared?: ParsedCrl;
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
      const until = this.#opts.share ? "one is there or another node shares one" : "one is there";
      log("REVOCATION_OFF", {
        detail: `no CRL at ${path}: revoked certificates are NOT refused until ${until}`,
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
    const { log, path } = this.#opts;
    const now = new Date();
    const unshared = this.#unshared;
    if (unshared && this.#opts.trust.crl === unshared) await this.#share(unshared);
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
        let crl: ParsedCrl | undefined;
        try {
          const pem = await Deno.readTextFile(path);
          crl = await this.#opts.trust.checkCrl(pemDecode(pem, "X509 CRL", "BAD_CERT"));
        } catch (error) {
          this.#refused(error, path);
        }
        if (crl && this.#adopt(crl, now, path, { source: "file" })) await this.#share(crl);
      }
    }
    this.#warnIfLapsing(now);
  }

  /**
   * A CRL another node shared (or none usable: undefined), as the cluster hands it over. Never
   * throws: every outcome is a log line.
   */
  offerShared(shared: SharedCrl | undefined): Promise<void> {
    this.#running = this.#running.then(() => this.#offerShared(shared)).catch((error) => {
      this.#opts.log("INTERNAL", { detail: `shared CRL: ${String(error)}` });
    });
    return this.#running;
  }

  async #offerShared(shared: SharedCrl | undefined): Promise<void> {
    const { trust } = this.#opts;
    const ours = trust.crl;
    if (!shared) {
      if (ours) await this.#share(ours);
      return;
    }
    const from = `the cluster (put there by node ${shared.node})`;
    let crl: ParsedCrl;
    try {
      crl = await trust.checkCrl(shared.der);
    } catch (error) {
      // Not a CRL of our CA: whoever wrote it, ours goes back in its place.
      this.#refused(error, from);
      if (ours) await this.#share(ours);
      return;
    }
    const adopted = this.#adopt(crl, new Date(), from, { source: "cluster", from: shared.node });
    // Only a lower number is put right: a CRL refused for its dates or for differing from ours
    // under one number would be put back by the node holding it, and the two would take turns.
    if (!adopted && ours && trust.crl === ours && crl.crlNumber! < ours.crlNumber!) {
      await this.#share(ours);
    }
  }

  /**
   * Makes a genuine CRL the one in force if it is newer, ends the sessions it newly revokes.
   * @returns whether it was adopted (false: the one in force already, or refused and logged)
   */
  #adopt(
    crl: ParsedCrl,
    now: Date,
    where: string,
    fields: { source: "file" | "cluster"; from?: string },
  ): boolean {
    const { trust, log } = this.#opts;
    let newly: Set<string> | null;
    try {
      newly = trust.adoptCrl(crl, now);
    } catch (error) {
      this.#refused(error, where);
      return false;
    }
    if (newly === null) return false;
    this.#lapsed = false;
    this.#lastWarning = -Infinity;
    log("CRL_LOADED", { ...crlFields(trust, where), ...fields, newly_revoked: newly.size });
    if (newly.size > 0) this.#opts.onRevoked(newly);
    return true;
  }

  #refused(error: unknown, where: string): void {
    this.#opts.log("CRL_REFUSED", {
      code: codeOf(error),
      detail: `${where}: ${(error as Error).message}; the CRL in force stays`,
    });
  }

  /**
   * Shares a CRL in force with the other nodes; a failure is logged, never thrown, and the
   * next check of the file tries again.
   */
  async #share(crl: ParsedCrl): Promise<void> {
    if (!this.#opts.share) return;
    this.#unshared = undefined;
    try {
      if (await this.#opts.share(crl.der)) {
        this.#opts.log("CRL_SHARED", { number: String(crl.crlNumber) });
      }
    } catch (error) {
      this.#unshared = crl;
      this.#opts.log(codeOf(error), {
        detail: `CRL ${crl.crlNumber} not shared: ${(error as Error).message}; trying again`,
      });
    }
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
