/**
 * Bun's test preload (`bun test --preload ./tests/bun/setup.ts ...`, see package.json's
 * `test:bun`): installs the `Deno` namespace shim (io/bun_shim.ts), then routes `Deno.test`
 * to `bun:test`, so the Deno test files of the Bun subset run unchanged.
 *
 * Tests that check something Bun does differently by design are skipped by name, each
 * with its reason, in {@linkcode SKIP_IN_BUN}.
 *
 * @module
 */

import { installDenoShim } from "../../io/bun_shim.ts";

// ---------------------------------------------------------------------------
// Tests Bun cannot pass, and why

/** Test name -> why it does not apply under Bun. */
const SKIP_IN_BUN: Record<string, string> = {
  "f32ToF16 inverts f16ToF32 on every non-NaN half":
    "JavaScriptCore makes every NaN read from a Float32Array the canonical one, sign and payload lost (V8 keeps them)",
  "each kernel worker adds at most KERNEL_WORKER_BYTES to the peak resident set":
    "the bound is measured for Deno's V8 isolates, in a Deno child process",
};

// ---------------------------------------------------------------------------
// Deno.test on bun:test

/** The part of `bun:test` used here. */
interface BunTest {
  (name: string, fn: () => unknown, options?: { timeout?: number }): void;
  skip(name: string, fn: () => unknown): void;
  only(name: string, fn: () => unknown, options?: { timeout?: number }): void;
}

/** The part of `Deno.TestDefinition` flashlm's tests use (sanitizer options are ignored). */
interface Definition {
  name: string;
  fn: (t: TestContext) => unknown;
  ignore?: boolean;
  only?: boolean;
}

/** The part of `Deno.TestContext` flashlm's tests use: `t.step` runs the step inline. */
interface TestContext {
  name: string;
  step(name: string, fn: (t: TestContext) => unknown): Promise<boolean>;
}

/** A test may run this long under Bun (Deno has no limit; Bun's default is 5 s). */
const TIMEOUT_MS = 120_000;

function context(name: string): TestContext {
  return {
    name,
    async step(stepName, fn) {
      await fn(context(`${name} > ${stepName}`));
      return true;
    },
  };
}

/** `Deno.test(name, fn)`, `(name, options, fn)`, `(options, fn)`, `({ name, fn, ... })`, `(fn)`. */
function definition(args: unknown[]): Definition {
  const [a, b, c] = args;
  if (typeof a === "string") {
    const options = typeof b === "object" && b !== null ? b as Partial<Definition> : {};
    return { ...options, name: a, fn: (typeof b === "function" ? b : c) as Definition["fn"] };
  }
  if (typeof a === "function") return { name: a.name, fn: a as Definition["fn"] };
  const def = { ...(a as Definition) };
  if (typeof b === "function") def.fn = b as Definition["fn"];
  return def;
}

function register(test: BunTest, def: Definition): void {
  const run = () => def.fn(context(def.name));
  const why = SKIP_IN_BUN[def.name];
  if (why !== undefined) {
    console.log(`skipped under Bun: "${def.name}" (${why})`);
    test.skip(def.name, run);
  } else if (def.ignore) test.skip(def.name, run);
  else if (def.only) test.only(def.name, run, { timeout: TIMEOUT_MS });
  else test(def.name, run, { timeout: TIMEOUT_MS });
}

await installDenoShim();
const bunTestModule = "bun:test"; // a variable, so Deno's type check never resolves it
const { test } = (await import(bunTestModule)) as { test: BunTest };
const denoTest = (...args: unknown[]): void => register(test, definition(args));
denoTest.ignore = (...args: unknown[]): void =>
  register(test, { ...definition(args), ignore: true });
denoTest.only = (...args: unknown[]): void => register(test, { ...definition(args), only: true });
(globalThis as unknown as { Deno: Record<string, unknown> }).Deno.test = denoTest;
