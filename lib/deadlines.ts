/**
 * Many deadlines on one timer. Every session waits on a read deadline (its idle timeout) and its
 * certificate's expiry; a timer each is a Node-style Timeout with its closures in Deno, a few
 * hundred bytes per idle session that a server holding thousands keeps for nothing. Here each
 * deadline is a small entry in one binary heap, and one timer is armed for the earliest live
 * entry (docs/PERFORMANCE.md, "Session 6").
 *
 * A cancelled entry stays in the heap until it reaches the top or the heap is rebuilt (when it
 * holds more than twice as many entries as are live): a busy connection cancels one read
 * deadline per frame, so cancelling must cost nothing but a mark.
 */

/** A deadline that has not passed yet can be cancelled; cancelling twice, or late, is harmless. */
export interface Deadline {
  cancel(): void;
}

/** The longest delay a timer takes (2^31 − 1 ms, ~24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

class Entry implements Deadline {
  constructor(readonly at: number, public action: (() => void) | undefined) {}

  cancel(): void {
    if (this.action === undefined) return;
    this.action = undefined;
    cancelled();
  }
}

/** Ordered by `at`, earliest first (heap[0]); cancelled entries have no action. */
let heap: Entry[] = [];
let live = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
let armedFor = Infinity;

/**
 * Runs `action` once `at` (ms since the epoch) has passed, unless cancelled before. Actions run
 * from a timer callback, earliest first; one that throws is reported as a timer's would be.
 */
export function atDeadline(at: number, action: () => void): Deadline {
  const entry = new Entry(at, action);
  push(entry);
  live++;
  if (at < armedFor) arm(at);
  return entry;
}

function cancelled(): void {
  live--;
  if (live === 0) {
    heap = [];
    disarm();
  } else if (heap.length > 2 * live + 64) {
    heap = heap.filter((entry) => entry.action !== undefined);
    // Floyd's construction: every parent sifted down, last parent first.
    for (let i = (heap.length >> 1) - 1; i >= 0; i--) siftDown(i);
  }
}

function arm(at: number): void {
  disarm();
  armedFor = at;
  timer = setTimeout(expire, Math.min(Math.max(at - Date.now(), 0), MAX_TIMER_MS));
}

function disarm(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  armedFor = Infinity;
}

function expire(): void {
  timer = undefined;
  armedFor = Infinity;
  const now = Date.now();
  while (heap.length > 0 && (heap[0].action === undefined || heap[0].at <= now)) {
    const entry = pop();
    const action = entry.action;
    if (action === undefined) continue;
    entry.action = undefined;
    live--;
    try {
      action();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }
  // An action may have added an earlier entry and armed the timer for it already.
  if (heap.length > 0 && heap[0].at < armedFor) arm(heap[0].at);
}

function push(entry: Entry): void {
  heap.push(entry);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent].at <= entry.at) break;
    heap[i] = heap[parent];
    i = parent;
  }
  heap[i] = entry;
}

function pop(): Entry {
  const top = heap[0];
  const last = heap.pop()!;
  if (heap.length > 0) {
    heap[0] = last;
    siftDown(0);
  }
  return top;
}

function siftDown(i: number): void {
  const entry = heap[i];
  while (true) {
    let child = 2 * i + 1;
    if (child >= heap.length) break;
    if (child + 1 < heap.length && heap[child + 1].at < heap[child].at) child++;
    if (heap[child].at >= entry.at) break;
    heap[i] = heap[child];
    i = child;
  }
  heap[i] = entry;
}
