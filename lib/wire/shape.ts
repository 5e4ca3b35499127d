/**
 * Hand-written shapes for the messages on the hot path (a chat line is parsed by the
 * server, by every recipient and by `verify`), where zod cost more than the signature
 * check. Same strictness as the zod schemas beside them: an object has exactly its
 * members (an unknown one, `__proto__` included, is as malformed as a missing one),
 * every member its type and bounds, base64 canonical (lib/wire/schema.ts). Duplicate
 * members never get here: parseStrictJson refuses them.
 *
 * A shape answers `safeParse` as a zod schema does, so parseMessage, the one parse
 * chokepoint, takes either.
 */
import { z } from "zod";
import type { Base64Batch } from "../bytes.ts";
import { canonicalBase64Length } from "./schema.ts";

export type Path = readonly (string | number)[];

export interface Issue {
  path: (string | number)[];
  message: string;
}

export type ShapeResult<T> =
  | { success: true; data: T }
  | { success: false; error: { issues: Issue[] } };

/** What parseMessage takes: a zod schema or a hand-written shape. */
export interface Shape<T> {
  safeParse(value: unknown): ShapeResult<T>;
}

/** Thrown by the checks below, caught by {@link shape}: never escapes a shape. */
class ShapeFailure {
  constructor(readonly path: (string | number)[], readonly message: string) {}
}

/** Fails the shape being checked at `path` + `key`: for a rule the helpers here do not cover. */
export function fail(path: Path, key: string | number | undefined, message: string): never {
  throw new ShapeFailure(key === undefined ? [...path] : [...path, key], message);
}

/** A shape from a check that returns the typed value or fails through the helpers here. */
export function shape<T>(check: (value: unknown, path: Path) => T): Shape<T> {
  return {
    safeParse(value: unknown): ShapeResult<T> {
      try {
        return { success: true, data: check(value, []) };
      } catch (error) {
        if (!(error instanceof ShapeFailure)) throw error;
        return {
          success: false,
          error: { issues: [{ path: error.path, message: error.message }] },
        };
      }
    },
  };
}

/** One of several shapes, chosen by the member `type` (or another discriminator). */
export function byType<T>(
  shapes: Readonly<Record<string, Shape<T>>>,
  discriminator = "type",
): Shape<T> {
  return shape((value, path) => {
    const type = isObject(value) ? value[discriminator] : undefined;
    if (typeof type !== "string" || !Object.hasOwn(shapes, type)) {
      fail(path, discriminator, `not one of ${Object.keys(shapes).join(", ")}`);
    }
    return unwrap(shapes[type].safeParse(value));
  });
}

/** The data of a result, or its issue thrown on. */
function unwrap<T>(result: ShapeResult<T>): T {
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new ShapeFailure(issue.path, issue.message);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * `value` as an object whose own members are all of `required` and some of `optional`,
 * nothing else.
 */
export function members(
  value: unknown,
  path: Path,
  required: readonly string[],
  optional: readonly string[] = [],
): Record<string, unknown> {
  if (!isObject(value)) fail(path, undefined, "expected an object");
  let found = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (required.includes(key)) found++;
    else if (!optional.includes(key)) fail(path, key, "unrecognized member");
  }
  if (found !== required.length) {
    fail(path, required.find((key) => !Object.hasOwn(value, key)), "required");
  }
  return value;
}

/** A string of `min..max` UTF-16 code units (zod's string length). */
export function text(
  value: unknown,
  path: Path,
  key: string | number,
  min: number,
  max: number,
): string {
  if (typeof value !== "string") fail(path, key, "expected a string");
  if (value.length < min || value.length > max) fail(path, key, `expected ${min}..${max} chars`);
  return value;
}

/** One of the given strings. */
export function literal<T extends string>(
  value: unknown,
  path: Path,
  key: string | number,
  options: readonly T[],
): T {
  if (typeof value !== "string" || !options.includes(value as T)) {
    fail(path, key, `expected ${options.join(" or ")}`);
  }
  return value as T;
}

/**
 * Exactly `chars` lowercase hex digits: what /^[0-9a-f]{chars}$/ accepts, in one pass (a relay's
 * `sid` and `author_fp` at every party; the regex cost more than the loop).
 */
export function lowerHex(value: unknown, path: Path, key: string | number, chars: number): string {
  if (typeof value !== "string" || value.length !== chars) {
    fail(path, key, `expected ${chars} lowercase hex characters`);
  }
  for (let i = 0; i < chars; i++) {
    const code = value.charCodeAt(i);
    if (!((code >= 0x30 && code <= 0x39) || (code >= 0x61 && code <= 0x66))) {
      fail(path, key, `expected ${chars} lowercase hex characters`);
    }
  }
  return value;
}

/** An integer `min..2^53-1`. */
export function uint(value: unknown, path: Path, key: string | number, min = 0): number {
  if (typeof value !== "number" || !Number.isInteger(value)) fail(path, key, "expected an integer");
  if (value < min || value > Number.MAX_SAFE_INTEGER) {
    fail(path, key, `expected ${min}..${Number.MAX_SAFE_INTEGER}`);
  }
  return value;
}

/** An array of at most `max` items (each checked by the caller). */
export function list(value: unknown, path: Path, key: string, max: number): unknown[] {
  if (!Array.isArray(value)) fail(path, key, "expected an array");
  if (value.length > max) fail(path, key, `expected at most ${max} items`);
  return value;
}

/** `true`, the only value of an optional flag. */
export function isTrue(value: unknown, path: Path, key: string | number): true {
  if (value !== true) fail(path, key, "expected true");
  return true;
}

/**
 * Canonical standard base64 of `minBytes..maxBytes` bytes, kept as text; the length cap
 * is checked before anything is decoded.
 */
export function base64Text(
  value: unknown,
  path: Path,
  key: string | number,
  minBytes: number,
  maxBytes: number,
): string {
  if (typeof value !== "string") fail(path, key, "expected a string");
  if (value.length > Math.ceil(maxBytes / 3) * 4) fail(path, key, `expected ..${maxBytes} bytes`);
  let length: number;
  try {
    length = canonicalBase64Length(value);
  } catch {
    fail(path, key, "not canonical standard base64");
  }
  if (length < minBytes || length > maxBytes) {
    fail(path, key, `expected ${minBytes}..${maxBytes} bytes`);
  }
  return value;
}

/**
 * {@link base64Text}, the text decoded into `into` as it is checked (one pass: Base64Batch), with
 * the same checks in the same order, so the same refusal: the length cap before anything is
 * decoded, then canonical base64, then the decoded length.
 */
export function base64Decoded(
  value: unknown,
  path: Path,
  key: string | number,
  minBytes: number,
  maxBytes: number,
  into: Base64Batch,
): string {
  if (typeof value !== "string") fail(path, key, "expected a string");
  if (value.length > Math.ceil(maxBytes / 3) * 4) fail(path, key, `expected ..${maxBytes} bytes`);
  let length: number;
  try {
    length = into.add(value);
  } catch {
    fail(path, key, "not canonical standard base64");
  }
  if (length < minBytes || length > maxBytes) {
    fail(path, key, `expected ${minBytes}..${maxBytes} bytes`);
  }
  return value;
}

/** A hand-written shape inside a zod schema (cold paths: cluster records, openings). */
export function zodOf<T>(inner: Shape<T>): z.ZodType<T, z.ZodTypeDef, unknown> {
  return z.unknown().transform((value, ctx) => {
    const result = inner.safeParse(value);
    if (result.success) return result.data;
    const issue = result.error.issues[0];
    ctx.addIssue({ code: "custom", path: issue.path, message: issue.message });
    return z.NEVER;
  });
}

/** `value` (the member `key` of `path`) checked by another shape or a zod schema (cold parts). */
export function nested<T>(inner: Shape<T>, value: unknown, path: Path, key: string): T {
  const result = inner.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new ShapeFailure([...path, key, ...issue.path], issue.message);
}
