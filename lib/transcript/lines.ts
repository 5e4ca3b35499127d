/**
 * Streams a file as lines of bytes, without ever holding more than one line
 * (bounded by `maxLine`) plus one read buffer in memory.
 */

export interface RawLine {
  /** 1-based line number. */
  number: number;
  /** The line without its terminating `\n`. */
  bytes: Uint8Array;
  /** false for a final line with no `\n` (a torn write). */
  complete: boolean;
  /** true if the line was longer than maxLine; `bytes` is then only its start. */
  overlong: boolean;
}

const CHUNK = 256 * 1024;

export async function* readLines(file: Deno.FsFile, maxLine: number): AsyncGenerator<RawLine> {
  const buf = new Uint8Array(CHUNK);
  let pending: Uint8Array[] = [];
  let pendingLength = 0;
  let overlong = false;
  let number = 0;
  const take = (tail: Uint8Array): Uint8Array => {
    if (pending.length === 0) return tail.slice();
    const out = new Uint8Array(pendingLength + tail.length);
    let o = 0;
    for (const p of pending) {
      out.set(p, o);
      o += p.length;
    }
    out.set(tail, o);
    pending = [];
    pendingLength = 0;
    return out;
  };
  while (true) {
    const n = await file.read(buf);
    if (n === null) break;
    let start = 0;
    while (start < n) {
      const nl = buf.subarray(start, n).indexOf(0x0a);
      if (nl === -1) {
        const rest = buf.subarray(start, n);
        if (!overlong) {
          if (pendingLength + rest.length > maxLine) {
            overlong = true;
          } else {
            pending.push(rest.slice());
            pendingLength += rest.length;
          }
        }
        break;
      }
      const piece = buf.subarray(start, start + nl);
      number++;
      if (overlong || pendingLength + piece.length > maxLine) {
        yield { number, bytes: take(new Uint8Array(0)), complete: true, overlong: true };
      } else {
        yield { number, bytes: take(piece), complete: true, overlong: false };
      }
      overlong = false;
      start += nl + 1;
    }
  }
  if (pendingLength > 0 || overlong) {
    number++;
    yield { number, bytes: take(new Uint8Array(0)), complete: false, overlong };
  }
}
