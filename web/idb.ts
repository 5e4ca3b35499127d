/// <reference lib="dom" />
/**
 * The page's IndexedDB (one database per origin): the imported identity (its key a
 * non-extractable CryptoKey, which IndexedDB stores without ever exposing its bytes) and the
 * newest CRL it has seen, relay high-water marks per user, each user's sealed end-to-end state
 * (web/e2e_storage.ts), and the transcripts of finished sessions until downloaded.
 */
import type { SignatureAlgorithm } from "../lib/crypto/signature.ts";

const DB_NAME = "securechat";
/** 2 added the "e2e" store. */
const DB_VERSION = 2;
const STORES = ["identity", "seen", "sessions", "e2e"] as const;
type Store = typeof STORES[number];

export interface StoredIdentity {
  username: string;
  certDer: Uint8Array;
  signing: { algorithm: SignatureAlgorithm; key: CryptoKey };
  caPem: string;
  caFingerprint: string;
  /**
   * The newest CA-signed CRL this browser has seen (DER), from the bundle or the server: a
   * server handing out an older one cannot unrevoke a certificate here.
   */
  crlDer?: Uint8Array;
}

export interface StoredSession {
  /** The transcript's base name: `<session>-<role>-<start>`. */
  base: string;
  endedAt: number;
  outcome: string;
  files: { name: string; bytes: Uint8Array }[];
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let opening: Promise<IDBDatabase> | undefined;

function database(): Promise<IDBDatabase> {
  opening ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      for (const store of STORES) {
        if (!req.result.objectStoreNames.contains(store)) req.result.createObjectStore(store);
      }
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opening;
}

export async function get<T>(store: Store, key: string): Promise<T | undefined> {
  const db = await database();
  return await request(db.transaction(store).objectStore(store).get(key)) as T | undefined;
}

/**
 * A write is done when its transaction completes on disk ("strict" durability, as an fsync): a
 * page closed or a browser that crashed right after keeps it.
 */
function writing(db: IDBDatabase, store: Store): IDBTransaction {
  return db.transaction(store, "readwrite", { durability: "strict" });
}

function completion(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("the IndexedDB transaction was aborted"));
  });
}

export async function put(store: Store, key: string, value: unknown): Promise<void> {
  const tx = writing(await database(), store);
  tx.objectStore(store).put(value, key);
  await completion(tx);
}

export async function remove(store: Store, key: string): Promise<void> {
  const tx = writing(await database(), store);
  tx.objectStore(store).delete(key);
  await completion(tx);
}

/** The value under `from` goes to `to`, in one transaction: either both happen or neither. */
export async function move(store: Store, from: string, to: string): Promise<void> {
  const tx = writing(await database(), store);
  const objects = tx.objectStore(store);
  const read = objects.get(from);
  read.onsuccess = () => {
    if (read.result === undefined) return tx.abort();
    objects.put(read.result, to);
    objects.delete(from);
  };
  await completion(tx);
}

export async function all<T>(store: Store): Promise<T[]> {
  const db = await database();
  return await request(db.transaction(store).objectStore(store).getAll()) as T[];
}
