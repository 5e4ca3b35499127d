/**
 * rootFromPath() with a PathMemo (PROTOCOL §6.1 step 1): a record whose loop reaches a state an
 * earlier record's loop went through takes that root instead of hashing on. It must answer
 * exactly what the loop without the memo answers, for honest paths and for every path a
 * hostile sender could pair with a memo full of honest states.
 */
import assert from "node:assert/strict";
import { sha256 } from "#sync-crypto";
import { toHex } from "../../lib/bytes.ts";
import { MAX_BATCH, merkleTree, PathMemo, rootFromPath } from "../../lib/message/record.ts";
import { Rng } from "../../testkit/fuzz.ts";

const hex = (root: Uint8Array | null) => root === null ? "null" : toHex(root);
const leavesOf = (tree: number, n: number) =>
  Array.from({ length: n }, (_, j) => sha256(Uint8Array.of(0, tree, j)));

Deno.test("rootFromPath() with a memo gives every leaf of every batch up to 32 its root, in any order", () => {
  const rng = new Rng(0x9a7e);
  const memo = new PathMemo();
  for (let n = 1; n <= MAX_BATCH; n++) {
    const leaves = leavesOf(n, n);
    const { root, paths } = merkleTree(leaves);
    const order = leaves.map((_, i) => i).sort(() => rng.int(3) - 1);
    for (const i of [...order, ...order]) {
      assert.equal(hex(rootFromPath(leaves[i], i, n, paths[i], memo)), toHex(root), `${i} of ${n}`);
    }
  }
});

Deno.test("rootFromPath() with a memo of honest batches answers every other position, size and path exactly as without it", () => {
  const rng = new Rng(0x51de);
  for (const n of [2, 3, 5, 8, 13, 16, 31, 32]) {
    const memo = new PathMemo();
    const leaves = leavesOf(n, n);
    const { paths } = merkleTree(leaves);
    for (let i = 0; i < n; i++) rootFromPath(leaves[i], i, n, paths[i], memo);
    const asked = (leaf: Uint8Array, i2: number, n2: number, path: Uint8Array[], what: string) =>
      assert.equal(
        hex(rootFromPath(leaf, i2, n2, path, memo)),
        hex(rootFromPath(leaf, i2, n2, path)),
        `${what}, read as ${i2} of ${n2}`,
      );
    for (let i = 0; i < n; i++) {
      const path = paths[i];
      for (let n2 = 1; n2 <= MAX_BATCH; n2++) {
        for (let i2 = 0; i2 < n2; i2++) asked(leaves[i], i2, n2, path, `leaf ${i} of ${n}`);
      }
      // An upper entry changed, one dropped or added, the leaf another's: never the memo's root.
      for (let j = 0; j < path.length; j++) {
        const flipped = path.map((p) => p.slice());
        flipped[j][rng.int(32)] ^= 1 << rng.int(8);
        asked(leaves[i], i, n, flipped, `leaf ${i} of ${n}, entry ${j} flipped`);
        asked(leaves[i], i, n, path.filter((_, k) => k !== j), `leaf ${i} of ${n} without ${j}`);
      }
      asked(leaves[i], i, n, [...path, path[0] ?? leaves[0]], `leaf ${i} of ${n}, one more`);
      asked(leaves[(i + 1) % n], i, n, path, `leaf ${i} of ${n} with its neighbour's leaf`);
    }
  }
});

Deno.test("rootFromPath() with a memo answers a state it remembers from the memo, not by hashing again", () => {
  const memo = new PathMemo();
  const leaves = leavesOf(7, 32);
  const { root, paths } = merkleTree(leaves);
  const first = rootFromPath(leaves[5], 5, 32, paths[5], memo);
  // The memo hands back the root it remembered, the very array: a loop run again makes a new one.
  assert.equal(rootFromPath(leaves[5], 5, 32, paths[5], memo), first);
  assert.notEqual(rootFromPath(leaves[5], 5, 32, paths[5]), first);
  assert.equal(hex(first), toHex(root));
});

Deno.test("PathMemo forgets its oldest states beyond its capacity and still answers exactly", () => {
  const memo = new PathMemo(8);
  for (let tree = 0; tree < 20; tree++) {
    const leaves = leavesOf(100 + tree, 32);
    const { root, paths } = merkleTree(leaves);
    for (let i = 31; i >= 0; i--) {
      assert.equal(hex(rootFromPath(leaves[i], i, 32, paths[i], memo)), toHex(root));
    }
  }
});

Deno.test("rootFromPath() with a memo refuses an entry that is only a prefix of a remembered one (review10 R10-5)", () => {
  for (const n of [4, 8, 32]) {
    const memo = new PathMemo();
    const leaves = leavesOf(n, n);
    const { paths } = merkleTree(leaves);
    for (let i = 0; i < n; i++) rootFromPath(leaves[i], i, n, paths[i], memo);
    for (let i = 0; i < n; i++) {
      for (let j = 1; j < paths[i].length; j++) {
        for (const keep of [0, 16, 31]) {
          const short = paths[i].map((p, k) => k === j ? p.subarray(0, keep) : p);
          assert.equal(
            hex(rootFromPath(leaves[i], i, n, short, memo)),
            hex(rootFromPath(leaves[i], i, n, short)),
            `leaf ${i} of ${n}, entry ${j} cut to ${keep} bytes`,
          );
        }
      }
    }
  }
});

Deno.test("merkleTree() and rootFromPath() give RFC 9162's MTH as its definition computes it, for 1 to 33 leaves (node hashes written into one reused buffer)", async () => {
  const hash = async (...parts: Uint8Array[]) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) all.set(p, (at += p.length) - p.length);
    return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  };
  // RFC 9162 §2.1.1: MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest
  // power of two below n; the leaves here are already leaf hashes.
  const mth = async (leaves: Uint8Array[]): Promise<Uint8Array> => {
    if (leaves.length === 1) return leaves[0];
    let k = 1;
    while (k * 2 < leaves.length) k *= 2;
    return hash(Uint8Array.of(1), await mth(leaves.slice(0, k)), await mth(leaves.slice(k)));
  };
  for (let n = 1; n <= 33; n++) {
    const leaves = await Promise.all(
      Array.from({ length: n }, (_, j) => hash(Uint8Array.of(0, j, n))),
    );
    const want = await mth(leaves);
    const tree = merkleTree(leaves);
    assert.deepEqual(tree.root, want, `${n} leaves`);
    for (let j = 0; j < n; j++) {
      assert.deepEqual(rootFromPath(leaves[j], j, n, tree.paths[j]), want);
    }
  }
});
