/**
 * Transcripts in a private directory (the CLI's and the server's): files created new with
 * mode 0600 in a 0700 directory, appends written synchronously in the writer's batches, the
 * log's descriptor closed while the session is idle (an idle session holds none) and reopened
 * on the next line, fsync of the files and the directory at the end.
 */
import { join } from "node:path";
import { ensurePrivateDir } from "../private_dir.ts";
import type { AppendSink, TranscriptStorage } from "./storage.ts";

const FILE_MODE = 0o600;
/** Close the log after this long without a line: an idle session holds no descriptor. */
const IDLE_CLOSE_MS = 1000;

/** Writes all of `bytes`; one write call in practice for a regular file in append mode. */
function writeAllSync(file: Deno.FsFile, bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
}

class FileSink implements AppendSink {
  #file: Deno.FsFile | null;
  #idleTimer?: ReturnType<typeof setTimeout>;
  /** performance.now() of the last use: the idle timer, armed once, closes only after it. */
  #usedAt = performance.now();

  constructor(readonly path: string, file: Deno.FsFile) {
    this.#file = file;
    this.#armIdleClose(IDLE_CLOSE_MS);
  }

  append(bytes: Uint8Array): void {
    this.#file ??= Deno.openSync(this.path, { write: true, append: true });
    writeAllSync(this.#file, bytes);
    this.#used();
  }

  async sync(): Promise<void> {
    // Reopened if idle: closing a descriptor does not make its writes durable.
    this.#file ??= await Deno.open(this.path, { write: true, append: true });
    await this.#file.sync();
    this.#used();
  }

  async close(): Promise<void> {
    try {
      await this.#file?.sync();
    } finally {
      this.#release();
    }
  }

  /**
   * Not a timer per write (a busy session appends every few milliseconds): the one armed
   * timer looks at the last use when it fires and waits out the rest of the idle time.
   */
  #used(): void {
    this.#usedAt = performance.now();
    if (this.#idleTimer === undefined) this.#armIdleClose(IDLE_CLOSE_MS);
  }

  #armIdleClose(ms: number): void {
    const timer = setTimeout(() => {
      this.#idleTimer = undefined;
      const idle = performance.now() - this.#usedAt;
      if (idle >= IDLE_CLOSE_MS) this.#release();
      else this.#armIdleClose(IDLE_CLOSE_MS - idle);
    }, ms);
    Deno.unrefTimer(timer);
    this.#idleTimer = timer;
  }

  #release(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    try {
      this.#file?.close();
    } catch { /* already closed */ }
    this.#file = null;
  }
}

/** The transcripts of `dir`, created 0700 when missing (tightened when too open). */
export function transcriptDirectory(dir: string): TranscriptStorage {
  return {
    location: dir,
    prepare: async () => void await ensurePrivateDir(dir),
    pathOf: (name) => join(dir, name),
    createAppendOnly: async (path) => {
      const file = await Deno.open(path, {
        write: true,
        append: true,
        createNew: true,
        mode: FILE_MODE,
      });
      try {
        // The mode given to open is masked by the umask: set it exactly.
        if (Deno.build.os !== "windows") await Deno.chmod(path, FILE_MODE);
      } catch (cause) {
        file.close();
        throw cause;
      }
      return new FileSink(path, file);
    },
    writeNew: async (path, text) => {
      const file = await Deno.open(path, { write: true, createNew: true, mode: FILE_MODE });
      try {
        if (Deno.build.os !== "windows") await Deno.chmod(path, FILE_MODE);
        writeAllSync(file, new TextEncoder().encode(text));
        await file.sync();
      } finally {
        file.close();
      }
    },
    syncNames: async () => {
      if (Deno.build.os === "windows") return;
      try {
        const handle = await Deno.open(dir, { read: true });
        try {
          await handle.sync();
        } finally {
          handle.close();
        }
      } catch { /* not supported on this platform / filesystem */ }
    },
  };
}
