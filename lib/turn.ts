/**
 * Bounded synchronous work per turn of the event loop.
 *
 * Ed25519 signatures, AES-GCM and HMAC run synchronously (lib/crypto), so a loop of
 * `await session.send(...)` can stay in microtasks for as long as it has lines: socket
 * writes, timers (the transcript's batch flush) and reads would wait until it ends.
 * Each unit of such work spends from one budget shared by the whole process (a turn
 * is the process's, not a session's); when the budget is spent the caller awaits a
 * macrotask, which lets the event loop poll I/O and run due timers, then goes on.
 */

/** Units of work per turn: 64 Ed25519 sends are a few ms, enough to amortise a yield (~20 µs). */
export const TURN_UNITS = 64;
/**
 * Received bytes handled per unit: a turn handles at most ~64 KiB of frames (one record's
 * worth), so what it makes for any one session — a relay is a little larger than the line it
 * carries — fits a send queue of two records (`serve --send-queue 131072`), not only the
 * default 1 MiB. A yield per ~64 KiB costs well under a µs per message.
 */
export const TURN_UNIT_BYTES = 1024;
/**
 * Wall time per turn, for units that are slow. Wall time, so a loaded machine (the
 * process descheduled mid-batch) yields more often; 10 ms keeps that rare while
 * bounding what a busy sender adds to everyone else's latency.
 */
export const TURN_MS = 10;

let units = 0;
let since = performance.now();
/** Turns seen: counted at each {@link nextTurn} and each {@link turnBegan}. */
let turns = 0;

/**
 * Which turn of the event loop this is, as far as this process can tell: it changes when a
 * {@link nextTurn} comes and when a callback of the event loop says so ({@link turnBegan}).
 * Equal values may still be two turns (a callback nobody reported came between); different
 * values never are one.
 */
export function currentTurn(): number {
  return turns;
}

/**
 * Called first by a callback the event loop runs (a connection's read completed, a timer
 * fired): what runs now is a later turn than anything before it. Free, unlike asking for a
 * turn's end: no channel, no message.
 */
export function turnBegan(): void {
  turns++;
}

/**
 * Spends `cost` units of the current turn's budget.
 * @returns whether it is spent: the caller then acts on what it still holds from this turn
 *   and calls {@link endTurn}. Two steps, so what that acting makes (a session's held
 *   messages, relayed to others) is this turn's and leaves at its end (PROTOCOL §3.2), not
 *   with what the next turn makes.
 */
export function spendTurn(cost = 1): boolean {
  units += cost;
  return units >= TURN_UNITS || performance.now() - since >= TURN_MS;
}

/**
 * Ends a turn whose budget is spent: what was gathered for its end ({@link atTurnEnd}) is
 * done now, before the caller goes on.
 * @returns a promise that resolves on a later turn of the event loop, after pending I/O and
 *   due timers had their chance
 */
export function endTurn(): Promise<void> {
  runTurnEnd();
  return nextTurn();
}

/**
 * The runtime's own "after I/O" macrotask, where it has one: Deno's `setImmediate` (global, Node
 * compatibility or not). Browsers have none.
 */
const immediate = (globalThis as { setImmediate?: (task: () => void) => unknown }).setImmediate;

/** A browser's yields: one channel, kept, each message one macrotask (see nextTurn). */
let browserPorts: { in: MessagePort; out: MessagePort } | undefined;
/** The browser's yields waiting, oldest first: each message posted resolves one, in order. */
const browserWaiting: (() => void)[] = [];

/** The yield asked for in this turn and not come yet: later yields of the same turn share it. */
let coming: { turn: number; promise: Promise<void> } | undefined;

/**
 * Resolves from a macrotask, after every microtask queued before it runs; I/O that completes in
 * the same poll (a read of data already waiting) may come before or after it (tests/turn_test.ts).
 * Every yield asked for in one turn shares one macrotask: a busy session's endTurn and the turn's
 * end it runs (atTurnEnd) would otherwise take two, one of them finding nothing left to do.
 *
 * In Deno, `setImmediate`: ~1–2 µs of CPU per yield, where a message on a kept MessageChannel
 * (node:worker_threads' port, sessions 14–17) cost 2–7 in dispatching its event. It lets I/O in
 * more often, too: a read that became ready while a loop of yields runs completed within ~60
 * yields, where the channel's messages ran ~3,700 first, and a loop doing 200 µs of work per turn
 * waited ~0.5 s for it (docs/PERFORMANCE.md, session 18; tests/turn_test.ts). Session 3 had found
 * the opposite in the Deno of its day: `setImmediate` ran without polling I/O. `setTimeout(0)`
 * waits a millisecond or more.
 *
 * In a browser (no `setImmediate`), a message on a kept MessageChannel, listened to with
 * `addEventListener` and `start`.
 */
export function nextTurn(): Promise<void> {
  if (coming?.turn === turns) return coming.promise;
  const promise = new Promise<void>((resolve) => {
    if (immediate) immediate(() => turnCame(resolve));
    else browserYield(resolve);
  });
  coming = { turn: turns, promise };
  return promise;
}

function browserYield(resolve: () => void): void {
  if (!browserPorts) {
    const { port1, port2 } = new MessageChannel();
    port1.addEventListener("message", () => turnCame(browserWaiting.shift()!));
    port1.start();
    browserPorts = { in: port1, out: port2 };
  }
  browserWaiting.push(resolve);
  browserPorts.out.postMessage(null);
}

/** A yield's macrotask came: a new turn, and the yield resolves. */
function turnCame(resolve: () => void): void {
  turns++;
  units = 0;
  since = performance.now();
  coming = undefined;
  resolve();
}

const atEnd = new Set<() => void>();
let endScheduled = false;

/**
 * Runs `task` once when this turn of the event loop is over (from a macrotask, see
 * nextTurn), however often it is asked for in the turn: work gathered during a turn — the
 * records a server seals per recipient session (PROTOCOL §3.2) — is done once for all of it.
 * `task` must not throw: it runs outside any caller.
 */
export function atTurnEnd(task: () => void): void {
  atEnd.add(task);
  if (endScheduled) return;
  endScheduled = true;
  void nextTurn().then(() => {
    endScheduled = false;
    runTurnEnd();
  });
}

/** Runs what waits for the turn's end; a task asked for after this waits for the next end. */
function runTurnEnd(): void {
  const tasks = [...atEnd];
  atEnd.clear();
  for (const t of tasks) t();
}
