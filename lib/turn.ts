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

/** A MessagePort, with node:worker_threads' ref/unref where Deno's Node compatibility made it. */
type TurnPort = MessagePort & { ref?(): void; unref?(): void };

/** The channel whose messages are the yields (nextTurn): kept between yields where it can be. */
let turnPorts: { in: TurnPort; out: TurnPort } | undefined;
/** The yields waiting, oldest first: each message posted resolves one, in order. */
const waiting: (() => void)[] = [];

/**
 * Resolves from a macrotask. A MessagePort message is delivered by the event loop
 * itself (when it polls I/O), unlike `setImmediate` (which Deno runs without polling)
 * or `setTimeout(0)` (clamped to a millisecond or more). It comes after every microtask
 * queued before it is delivered; I/O that completes in the same poll (a read of data already
 * waiting) may come before or after it (tests/turn_test.ts).
 *
 * One channel serves every yield, each a message on it, where its port can be unreferenced:
 * a busy server yields hundreds of times a second, and a fresh channel per yield (two ports,
 * their resources and a receive op, closed again) cost 13–50 µs of CPU where a message on a
 * kept one costs 3–5 (docs/PERFORMANCE.md, session 14). The receiving port holds the event loop
 * open only while a yield waits (`ref`), so an idle process still exits. That is
 * node:worker_threads' MessagePort, which `serve` and `connect` have: once any npm package is
 * loaded (the CLI's reflect-metadata, @peculiar/x509), Deno's Node compatibility replaces the
 * global MessageChannel with it. The web platform's ports cannot be unreferenced, so there the
 * channel is closed whenever no yield waits, and a later yield opens another.
 *
 * Listened to with `addEventListener` and `start`, not `onmessage`: node:worker_threads' own
 * `onmessage` is called from a microtask after the post — not a turn at all: every "yield"
 * went on without polling I/O and every "turn's end" came a microtask later. Its ports' message
 * event is still the event loop's (tests/unit/turn_node_compat_test.ts).
 */
export function nextTurn(): Promise<void> {
  if (!turnPorts) {
    const { port1, port2 } = new MessageChannel();
    port1.addEventListener("message", turnCame);
    port1.start();
    turnPorts = { in: port1, out: port2 };
  }
  const ports = turnPorts;
  return new Promise((resolve) => {
    if (waiting.push(resolve) === 1) ports.in.ref?.();
    ports.out.postMessage(null);
  });
}

/** A yield's message came: a new turn, and the oldest yield waiting resolves. */
function turnCame(): void {
  turns++;
  units = 0;
  since = performance.now();
  const resolve = waiting.shift()!;
  if (waiting.length === 0) {
    const ports = turnPorts!;
    if (ports.in.unref) {
      ports.in.unref();
    } else {
      ports.in.close();
      ports.out.close();
      turnPorts = undefined;
    }
  }
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
