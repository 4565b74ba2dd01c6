/**
 * Typed re-exports of the `@std/assert` functions the tests use.
 *
 * `@std/assert` comes from the npm package `deno-std`, which ships plain
 * JavaScript without type declarations, so its exports are `any`. Each one is
 * given its std signature here, so tests are type-checked.
 *
 * @example
 * ```ts
 * import { assertEquals, assertThrows } from "./_assert.ts";
 *
 * assertEquals(1 + 1, 2);
 * const err = assertThrows(() => JSON.parse("{"), SyntaxError);
 * ```
 *
 * @module
 */

import * as std from "@std/assert";

/** A class whose instances are `E` (abstract classes included). */
export type ErrorClass<E extends Error = Error> = abstract new (...args: never[]) => E;

/** Throws unless `expr` is truthy. */
export const assert: (expr: unknown, msg?: string) => asserts expr = std.assert;

/** Throws unless `expr` is falsy. */
export const assertFalse: (expr: unknown, msg?: string) => void = std.assertFalse;

/** Throws when `actual` is `null` or `undefined`. */
export const assertExists: <T>(actual: T, msg?: string) => asserts actual is NonNullable<T> =
  std.assertExists;

/** Throws unless `actual` and `expected` are deeply equal. */
export const assertEquals: <T>(actual: T, expected: T, msg?: string) => void = std.assertEquals;

/** Throws when `actual` and `expected` are deeply equal. */
export const assertNotEquals: <T>(actual: T, expected: T, msg?: string) => void =
  std.assertNotEquals;

/** Throws unless `actual` and `expected` are the same value (`Object.is`). */
export const assertStrictEquals: <T>(actual: unknown, expected: T, msg?: string) => void =
  std.assertStrictEquals;

/**
 * Throws unless `fn` throws. With an error class, the thrown value must be an
 * instance of it (and include `msgIncludes` in its message), and is returned typed.
 */
export const assertThrows: {
  (fn: () => unknown, msg?: string): unknown;
  <E extends Error = Error>(
    fn: () => unknown,
    errorClass: ErrorClass<E>,
    msgIncludes?: string,
    msg?: string,
  ): E;
} = std.assertThrows;

/**
 * Throws unless the promise `fn` returns rejects. With an error class, the
 * rejection must be an instance of it (and include `msgIncludes` in its
 * message), and is returned typed.
 */
export const assertRejects: {
  (fn: () => PromiseLike<unknown>, msg?: string): Promise<unknown>;
  <E extends Error = Error>(
    fn: () => PromiseLike<unknown>,
    errorClass: ErrorClass<E>,
    msgIncludes?: string,
    msg?: string,
  ): Promise<E>;
} = std.assertRejects;

/** Throws unless `actual` matches `expected`. */
export const assertMatch: (actual: string, expected: RegExp, msg?: string) => void =
  std.assertMatch;

/** Throws unless `actual` includes `expected`. */
export const assertStringIncludes: (actual: string, expected: string, msg?: string) => void =
  std.assertStringIncludes;

/** Throws unless `actual > expected`. */
export const assertGreater: <T>(actual: T, expected: T, msg?: string) => void = std.assertGreater;

/** Throws unless `actual < expected`. */
export const assertLess: <T>(actual: T, expected: T, msg?: string) => void = std.assertLess;

/** Throws unless `actual >= expected`. */
export const assertGreaterOrEqual: <T>(actual: T, expected: T, msg?: string) => void =
  std.assertGreaterOrEqual;

/** Throws unless `actual <= expected`. */
export const assertLessOrEqual: <T>(actual: T, expected: T, msg?: string) => void =
  std.assertLessOrEqual;

/** Throws unless `actual` is an instance of `expectedType`. */
export const assertInstanceOf: <T extends abstract new (...args: never[]) => unknown>(
  actual: unknown,
  expectedType: T,
  msg?: string,
) => asserts actual is InstanceType<T> = std.assertInstanceOf;

/** Always throws, with `msg`. */
export const fail: (msg?: string) => never = std.fail;
