/**
 * The fuzz runner for flashlm's parsers (see `tests/fuzz_test.ts`): seeded draws, an
 * allocation tracker and the loop that classifies each case. The mutators are in
 * `tests/fuzz_mutators.ts`, the valid inputs of each format in `tests/fuzz_formats.ts`.
 *
 * A fuzz case mutates a valid input (bit flips, byte insertions and deletions, truncation,
 * length fields set to huge values, JSON structural edits), runs a parser on it and classifies
 * the outcome. A case passes when it ends in success or in a {@linkcode FlashlmError} whose
 * message is one line naming the file; it fails on any other exception, when it runs longer
 * than {@linkcode CASE_TIME_LIMIT_MS} (a hang bound, not a speed threshold), or when it asks
 * for a typed array or ArrayBuffer larger than its input plus {@linkcode ALLOCATION_SLACK}.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// Seeded randomness: flashlm's one generator (Rng, mulberry32) and three draws from it

/**
 * A whole number in [0, n) drawn from `rng`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Rng } from "../core/sampler.ts";
 * import { randomInt } from "./fuzz_helpers.ts";
 * const a = new Rng(5), b = new Rng(5);
 * const n = randomInt(a, 10);
 * assert.ok(Number.isInteger(n) && n >= 0 && n < 10);
 * assert.equal(randomInt(b, 10), n, "the same seed gives the same draws");
 * ```
 */
export function randomInt(rng: Rng, n: number): number {
  return Math.floor(rng.next() * n);
}

/**
 * One of `items`, uniformly, drawn from `rng`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Rng } from "../core/sampler.ts";
 * import { pickOne } from "./fuzz_helpers.ts";
 * const rng = new Rng(1);
 * const seen = new Set(Array.from({ length: 100 }, () => pickOne(rng, ["a", "b", "c"])));
 * assert.deepEqual([...seen].sort(), ["a", "b", "c"]);
 * ```
 */
export function pickOne<T>(rng: Rng, items: readonly T[]): T {
  return items[randomInt(rng, items.length)];
}

/**
 * True with probability `p`, drawn from `rng`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { Rng } from "../core/sampler.ts";
 * import { chance } from "./fuzz_helpers.ts";
 * const rng = new Rng(2);
 * assert.equal(chance(rng, 0), false);
 * assert.equal(chance(rng, 1), true);
 * ```
 */
export function chance(rng: Rng, p: number): boolean {
  return rng.next() < p;
}

// ---------------------------------------------------------------------------
// Allocation tracking

/** The typed-array and ArrayBuffer constructors the tracker watches. */
const TRACKED = [
  "ArrayBuffer",
  "Uint8Array",
  "Int8Array",
  "Uint8ClampedArray",
  "Uint16Array",
  "Int16Array",
  "Uint32Array",
  "Int32Array",
  "Float32Array",
  "Float64Array",
  "BigInt64Array",
  "BigUint64Array",
] as const;

type AnyConstructor = new (...args: unknown[]) => unknown;

/** Bytes that `new target(...args)` asks for (0 for a view of an existing buffer). */
function requestedBytes(name: string, target: AnyConstructor, args: unknown[]): number {
  const a0 = args[0];
  if (name === "ArrayBuffer") {
    const max = (args[1] as { maxByteLength?: number } | undefined)?.maxByteLength ?? 0;
    return Math.max(Number(a0) || 0, Number(max) || 0);
  }
  const bpe = (target as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  if (typeof a0 === "number") return Number.isFinite(a0) && a0 > 0 ? a0 * bpe : 0;
  if (
    a0 instanceof ORIGINALS.ArrayBuffer ||
    (typeof SharedArrayBuffer !== "undefined" && a0 instanceof SharedArrayBuffer)
  ) return 0;
  const length = (a0 as { length?: unknown } | null | undefined)?.length;
  return typeof length === "number" && length > 0 ? length * bpe : 0;
}

const ORIGINALS = Object.fromEntries(
  TRACKED.map((name) => [name, (globalThis as unknown as Record<string, AnyConstructor>)[name]]),
) as Record<(typeof TRACKED)[number], AnyConstructor>;

/**
 * Records the largest typed array or ArrayBuffer that code asks for while it runs: the global
 * constructors are replaced by proxies between `start()` and `stop()` (views of an existing
 * buffer count 0; `Array` and strings are not tracked).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { AllocationTracker } from "./fuzz_helpers.ts";
 * const tracker = new AllocationTracker();
 * tracker.start();
 * try {
 *   new Float32Array(1000);
 *   new Uint8Array(new ArrayBuffer(16), 0, 8);
 * } finally {
 *   tracker.stop();
 * }
 * assert.equal(tracker.largest, 4000);
 * ```
 */
export class AllocationTracker {
  /** Largest request in bytes since `start()`. */
  largest = 0;
  #active = false;

  /** Reset `largest` and start recording. */
  start(): void {
    if (this.#active) throw new Error("allocation tracker already started");
    this.#active = true;
    this.largest = 0;
    const g = globalThis as unknown as Record<string, unknown>;
    for (const name of TRACKED) {
      const target = ORIGINALS[name];
      const proxy: AnyConstructor = new Proxy(target, {
        construct: (t, args, newTarget) => {
          const bytes = requestedBytes(name, t, args);
          if (bytes > this.largest) this.largest = bytes;
          return Reflect.construct(t, args, newTarget === proxy ? t : newTarget);
        },
      });
      g[name] = proxy;
    }
  }

  /** Put the original constructors back. */
  stop(): void {
    const g = globalThis as unknown as Record<string, unknown>;
    for (const name of TRACKED) g[name] = ORIGINALS[name];
    this.#active = false;
  }
}

// ---------------------------------------------------------------------------
// The runner

/** Longest a single case may run before it counts as a hang. */
export const CASE_TIME_LIMIT_MS = 2000;

/** Allocation allowed beyond a case's input size (fixed tables such as the tokenizer's GPT-2 map). */
export const ALLOCATION_SLACK = 1 << 20;

/** Longest error message accepted as "one line". */
const MAX_MESSAGE_CHARS = 1000;

/** One fuzz case: a mutated input and the parser call to run on it. */
export interface FuzzCase {
  /** What was done to the input (shown when the case fails). */
  how: string;
  /** Size of the input in bytes; allocations may reach this plus {@linkcode ALLOCATION_SLACK}. */
  inputBytes: number;
  /** The file every error message must start with, if any. */
  file?: string;
  /** Run the parser; throwing a non-FlashlmError (e.g. a failed invariant) fails the case. */
  run: () => unknown;
}

/** What a fuzz run saw. */
export interface FuzzReport {
  /** The format fuzzed. */
  format: string;
  /** Cases run. */
  cases: number;
  /** Cases the parser accepted. */
  accepted: number;
  /** Cases rejected with a one-line FlashlmError. */
  rejected: number;
  /** Descriptions of failed cases (empty when all passed). */
  failures: string[];
  /** Slowest case in milliseconds. */
  slowestMs: number;
  /** Largest allocation seen, and the input size of that case. */
  largestAllocation: { bytes: number; inputBytes: number };
}

/**
 * The number of cases per format: `$FLASHLM_FUZZ_ITERS` when set (the full run uses 10000),
 * else `fallback`. Never zero.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { fuzzIterations } from "./fuzz_helpers.ts";
 * assert.ok(fuzzIterations(300) >= 1);
 * ```
 */
export function fuzzIterations(fallback: number): number {
  let raw: string | undefined;
  try {
    raw = Deno.env.get("FLASHLM_FUZZ_ITERS");
  } catch {
    raw = undefined; // no --allow-env: use the default
  }
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`FLASHLM_FUZZ_ITERS must be a whole number >= 1, got ${JSON.stringify(raw)}`);
  }
  return n;
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message.slice(0, 300)}`;
  return String(e);
}

/**
 * Run `iterations` cases made by `make` (seeded with `seed`) and classify each: accepted,
 * rejected with a good FlashlmError, or failed (another exception, a multi-line or
 * misattributed message, slower than {@linkcode CASE_TIME_LIMIT_MS}, or an allocation over
 * the input size plus {@linkcode ALLOCATION_SLACK}).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashlmError } from "../io/errors.ts";
 * import { randomInt, runFuzz } from "./fuzz_helpers.ts";
 * const report = await runFuzz("digits", 50, 1, (rng) => {
 *   const text = String(randomInt(rng, 100));
 *   return {
 *     how: text,
 *     inputBytes: text.length,
 *     run: () => {
 *       if (Number(text) % 2) throw new FlashlmError("odd", { file: "x" });
 *     },
 *     file: "x",
 *   };
 * });
 * assert.equal(report.accepted + report.rejected, 50);
 * assert.ok(report.accepted > 0 && report.rejected > 0, "odd numbers are rejected, even accepted");
 * assert.deepEqual(report.failures, []);
 * ```
 */
export async function runFuzz(
  format: string,
  iterations: number,
  seed: number,
  make: (rng: Rng, index: number) => FuzzCase | Promise<FuzzCase>,
): Promise<FuzzReport> {
  const rng = new Rng(seed);
  const tracker = new AllocationTracker();
  const report: FuzzReport = {
    format,
    cases: 0,
    accepted: 0,
    rejected: 0,
    failures: [],
    slowestMs: 0,
    largestAllocation: { bytes: 0, inputBytes: 0 },
  };
  for (let i = 0; i < iterations; i++) {
    const c = await make(rng, i);
    const fail = (why: string): void => {
      if (report.failures.length < 20) report.failures.push(`case ${i} (${c.how}): ${why}`);
      else if (report.failures.length === 20) report.failures.push("... more failures");
    };
    let error: unknown = null;
    const t0 = performance.now();
    tracker.start();
    try {
      await c.run();
    } catch (e) {
      error = e;
    } finally {
      tracker.stop();
    }
    const ms = performance.now() - t0;
    report.cases++;
    report.slowestMs = Math.max(report.slowestMs, ms);
    if (tracker.largest > report.largestAllocation.bytes) {
      report.largestAllocation = { bytes: tracker.largest, inputBytes: c.inputBytes };
    }
    if (ms > CASE_TIME_LIMIT_MS) {
      fail(`took ${ms.toFixed(0)} ms (hang bound ${CASE_TIME_LIMIT_MS} ms)`);
    }
    if (tracker.largest > c.inputBytes + ALLOCATION_SLACK) {
      fail(`asked for ${tracker.largest} bytes from a ${c.inputBytes}-byte input`);
    }
    if (error === null) {
      report.accepted++;
      continue;
    }
    if (!(error instanceof FlashlmError)) {
      fail(`threw ${describe(error)}`);
      continue;
    }
    const message = error.message;
    if (message.length === 0 || /[\r\n]/.test(message) || message.length > MAX_MESSAGE_CHARS) {
      fail(`message is not one short line: ${JSON.stringify(message.slice(0, 300))}`);
    } else if (c.file !== undefined && !message.startsWith(`${c.file}`)) {
      fail(`message does not name ${c.file}: ${message}`);
    } else {
      report.rejected++;
    }
  }
  return report;
}

/**
 * The one-line summary a fuzz test prints.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatFuzzReport } from "./fuzz_helpers.ts";
 * const line = formatFuzzReport({ format: "x", cases: 2, accepted: 1, rejected: 1, failures: [],
 *   slowestMs: 1, largestAllocation: { bytes: 8, inputBytes: 4 } });
 * assert.match(line, /2 cases, 1 accepted, 1 rejected/);
 * ```
 */
export function formatFuzzReport(r: FuzzReport): string {
  return `fuzz ${r.format}: ${r.cases} cases, ${r.accepted} accepted, ${r.rejected} rejected with a FlashlmError, ` +
    `${r.failures.length} failed · slowest case ${
      r.slowestMs.toFixed(1)
    } ms · largest allocation ` +
    `${r.largestAllocation.bytes} B (input ${r.largestAllocation.inputBytes} B)`;
}
