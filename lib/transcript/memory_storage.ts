/**
 * A transcript storage held in memory: the browser page's (it saves the files to IndexedDB
 * when the session ends and offers them for download, byte for byte what `securechat verify`
 * reads), and tests'.
 */
import { concat } from "../bytes.ts";
import type { AppendSink, TranscriptStorage } from "./storage.ts";

export class MemoryTranscriptStorage implements TranscriptStorage {
  readonly location: string;
  readonly #files = new Map<string, Uint8Array[]>();

  readonly #persist?: (files: { name: string; bytes: Uint8Array }[]) => Promise<void>;

  /**
   * `persist` is called with every file when the writer asks for durability (sync, close):
   * the page saves them to IndexedDB there.
   */
  constructor(
    location = "memory",
    persist?: (files: { name: string; bytes: Uint8Array }[]) => Promise<void>,
  ) {
    this.location = location;
    this.#persist = persist;
  }

  prepare(): Promise<void> {
    return Promise.resolve();
  }

  pathOf(name: string): string {
    return name;
  }

  createAppendOnly(path: string): Promise<AppendSink> {
    const chunks = this.#create(path);
    return Promise.resolve({
      append: (bytes: Uint8Array) => void chunks.push(bytes.slice()),
      sync: () => this.#durable(),
      close: () => this.#durable(),
    });
  }

  writeNew(path: string, text: string): Promise<void> {
    this.#create(path).push(new TextEncoder().encode(text));
    return this.#durable();
  }

  syncNames(): Promise<void> {
    return Promise.resolve();
  }

  /** Every file's name and whole content, in creation order. */
  files(): { name: string; bytes: Uint8Array }[] {
    return [...this.#files].map(([name, chunks]) => ({ name, bytes: concat(...chunks) }));
  }

  async #durable(): Promise<void> {
    await this.#persist?.(this.files());
  }

  #create(path: string): Uint8Array[] {
    if (this.#files.has(path)) throw new Error(`${path} already exists`);
    const chunks: Uint8Array[] = [];
    this.#files.set(path, chunks);
    return chunks;
  }
}
