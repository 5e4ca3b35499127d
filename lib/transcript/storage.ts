/**
 * Where a transcript's files go (TRANSCRIPT §2): the writer decides what is written and when,
 * a storage only keeps bytes. The CLI and the server use a private directory
 * (./file_storage.ts); the browser page keeps them in memory and IndexedDB
 * (./memory_storage.ts), so the page records exactly what the CLI records.
 */

/** A file that only grows. */
export interface AppendSink {
  /**
   * Appends one batch now; it throws when the bytes cannot be written. The bytes are the
   * caller's again once it returns: a sink that keeps them keeps a copy.
   */
  append(bytes: Uint8Array): void;
  /** Makes everything appended so far durable (fsync); appends go on. */
  sync(): Promise<void>;
  /** Makes everything appended durable and releases the file. */
  close(): Promise<void>;
}

export interface TranscriptStorage {
  /** Where the files go, for messages: a directory, or the page's store. */
  readonly location: string;
  /** Makes the location ready (the CLI's 0700 directory). @throws on failure */
  prepare(): Promise<void>;
  /** The path of `name` (e.g. `<base>.log`) in this storage. */
  pathOf(name: string): string;
  /** Creates `path`, which must not exist, private to the user. @throws on failure */
  createAppendOnly(path: string): Promise<AppendSink>;
  /** Writes a small new file (a receipt) durably; `path` must not exist. @throws on failure */
  writeNew(path: string, text: string): Promise<void>;
  /** Makes the new names durable (the directory's fsync; best effort). */
  syncNames(): Promise<void>;
}
