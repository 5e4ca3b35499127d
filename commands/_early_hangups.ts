/**
 * SIGHUP before `serve` has its own handler. main.ts calls `holdEarlyHangups` before it loads the
 * rest of the program (100–250 ms of module loading), because until some listener exists SIGHUP's
 * default action ends the process; serve's handler takes over with `releaseEarlyHangups` and honours
 * a SIGHUP held meanwhile as a CRL reload once the server is up. This module imports nothing, so
 * that it costs main.ts nothing to load first.
 */

let held: { listener: () => void; count: number } | undefined;

/** Takes SIGHUP from now on, remembering that one came, until `releaseEarlyHangups`. */
export function holdEarlyHangups(): void {
  if (held) return;
  const state = { count: 0, listener: () => void state.count++ };
  Deno.addSignalListener("SIGHUP", state.listener);
  held = state;
}

/**
 * Stops holding SIGHUP; call it after adding the listener that takes over, so that SIGHUP is
 * never without one. @returns whether a SIGHUP came while it was held
 */
export function releaseEarlyHangups(): boolean {
  const state = held;
  if (!state) return false;
  held = undefined;
  Deno.removeSignalListener("SIGHUP", state.listener);
  return state.count > 0;
}
