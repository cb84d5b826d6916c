/**
 * Seeded mutators and a fuzz runner for flashlm's parsers (see `tests/fuzz_test.ts`).
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

// ---------------------------------------------------------------------------
// Seeded randomness

/**
 * A small seeded random generator (mulberry32): the same seed gives the same cases.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FuzzRng } from "./fuzz_helpers.ts";
 * const a = new FuzzRng(5), b = new FuzzRng(5);
 * assert.equal(a.next(), b.next());
 * assert.ok(a.int(10) >= 0 && a.int(10) < 10);
 * ```
 */
export class FuzzRng {
  #state: number;

  /** Start the sequence of `seed`. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform number in [0, 1). */
  next(): number {
    const s = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** A whole number in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** One of `items`, uniformly. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }
}

// ---------------------------------------------------------------------------
// Byte mutations

/** A fixed-width little-endian unsigned length field of a binary format. */
export interface LengthField {
  /** Byte offset of the field. */
  offset: number;
  /** Width in bytes: 4 or 8. */
  size: 4 | 8;
}

/** Options of {@linkcode mutateBytes}. */
export interface ByteMutationOptions {
  /** Length fields that may be set to huge or off-by-one values. */
  lengthFields?: LengthField[];
  /** Most positions fall in [focus[0], focus[1]) (the part a parser reads first). */
  focus?: [number, number];
}

/** A mutated input and what was done to it. */
export interface Mutated<T> {
  /** The mutated input (a new object; the original is not modified). */
  value: T;
  /** What was done, for failure messages. */
  how: string;
}

/** Bytes that mean something to JSON and binary parsers. */
const INTERESTING_BYTES = [
  0x00,
  0xff,
  0x7f,
  0x80,
  0x22,
  0x7b,
  0x7d,
  0x2c,
  0x3a,
  0x5b,
  0x5d,
  0x0a,
  0x5c,
  0x30,
  0x39,
  0x2d,
];

function lengthValues(size: number): bigint[] {
  const n = BigInt(size);
  return [
    0n,
    1n,
    7n,
    n - 1n,
    n,
    n + 1n,
    n * 4n,
    2n ** 31n - 1n,
    2n ** 32n - 1n,
    2n ** 53n - 1n,
    2n ** 53n + 1n,
    2n ** 63n,
    2n ** 64n - 1n,
  ];
}

/**
 * One random mutation of `bytes`: bit flips, an interesting byte, inserted or deleted bytes,
 * truncation, a copied chunk, or (when `options.lengthFields` is given) a length field set to a
 * huge or off-by-one value.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FuzzRng, mutateBytes } from "./fuzz_helpers.ts";
 * const input = new Uint8Array(64).fill(7);
 * const { value, how } = mutateBytes(input, new FuzzRng(1), {
 *   lengthFields: [{ offset: 0, size: 8 }],
 * });
 * assert.ok(how.length > 0);
 * assert.ok(value !== input && input.every((b) => b === 7), "the input is left alone");
 * ```
 */
export function mutateBytes(
  bytes: Uint8Array,
  rng: FuzzRng,
  options: ByteMutationOptions = {},
): Mutated<Uint8Array> {
  const position = (): number => {
    const f = options.focus;
    if (f && f[1] > f[0] && rng.chance(0.8)) {
      return Math.min(bytes.length, f[0] + rng.int(f[1] - f[0]));
    }
    return rng.int(bytes.length + 1);
  };
  const fields = options.lengthFields ?? [];
  const kinds = ["flip", "flip", "byte", "insert", "delete", "truncate", "copy"];
  if (fields.length) kinds.push("length", "length");
  const kind = bytes.length === 0 ? "insert" : rng.pick(kinds);
  switch (kind) {
    case "flip": {
      const out = bytes.slice();
      const flips = 1 + rng.int(3);
      const at: number[] = [];
      for (let k = 0; k < flips; k++) {
        const p = Math.min(position(), out.length - 1);
        out[p] ^= 1 << rng.int(8);
        at.push(p);
      }
      return { value: out, how: `flipped bits at ${at.join(", ")}` };
    }
    case "byte": {
      const out = bytes.slice();
      const p = Math.min(position(), out.length - 1);
      out[p] = rng.pick(INTERESTING_BYTES);
      return { value: out, how: `set byte ${p} to 0x${out[p].toString(16)}` };
    }
    case "insert": {
      const p = position();
      const n = 1 + rng.int(8);
      const out = new Uint8Array(bytes.length + n);
      out.set(bytes.subarray(0, p));
      for (let k = 0; k < n; k++) {
        out[p + k] = rng.chance(0.5) ? rng.pick(INTERESTING_BYTES) : rng.int(256);
      }
      out.set(bytes.subarray(p), p + n);
      return { value: out, how: `inserted ${n} bytes at ${p}` };
    }
    case "delete": {
      const p = Math.min(position(), bytes.length - 1);
      const n = Math.min(1 + rng.int(8), bytes.length - p);
      const out = new Uint8Array(bytes.length - n);
      out.set(bytes.subarray(0, p));
      out.set(bytes.subarray(p + n), p);
      return { value: out, how: `deleted ${n} bytes at ${p}` };
    }
    case "truncate": {
      const n = rng.chance(0.3) ? rng.int(Math.min(bytes.length, 64)) : position();
      return { value: bytes.slice(0, n), how: `truncated to ${n} bytes` };
    }
    case "copy": {
      const from = rng.int(bytes.length);
      const n = Math.min(1 + rng.int(32), bytes.length - from);
      const to = Math.min(position(), bytes.length - n);
      const out = bytes.slice();
      out.copyWithin(to, from, from + n);
      return { value: out, how: `copied ${n} bytes from ${from} to ${to}` };
    }
    default: {
      const field = rng.pick(fields);
      const out = bytes.slice();
      if (out.length < field.offset + field.size) {
        return { value: out, how: "length field cut off" };
      }
      const view = new DataView(out.buffer);
      let v = rng.pick(lengthValues(bytes.length));
      if (field.size === 4) {
        v = v & 0xffffffffn;
        view.setUint32(field.offset, Number(v), true);
      } else {
        view.setBigUint64(field.offset, v & 0xffffffffffffffffn, true);
      }
      return { value: out, how: `set the ${field.size}-byte length at ${field.offset} to ${v}` };
    }
  }
}

// ---------------------------------------------------------------------------
// JSON structural mutations

/** A JSON value as a tree that can hold duplicate keys and raw number texts. */
type JsonNode =
  | { t: "object"; entries: [string, JsonNode][] }
  | { t: "array"; items: JsonNode[] }
  | { t: "raw"; text: string };

function toNode(value: unknown): JsonNode {
  if (Array.isArray(value)) return { t: "array", items: value.map(toNode) };
  if (typeof value === "object" && value !== null) {
    return { t: "object", entries: Object.entries(value).map(([k, v]) => [k, toNode(v)]) };
  }
  return { t: "raw", text: JSON.stringify(value) ?? "null" };
}

function nodeText(node: JsonNode): string {
  // Iterative, so a deeply nested value cannot overflow the serializer's stack.
  const parts: string[] = [];
  const stack: (JsonNode | string)[] = [node];
  while (stack.length) {
    const top = stack.pop()!;
    if (typeof top === "string") {
      parts.push(top);
    } else if (top.t === "raw") {
      parts.push(top.text);
    } else if (top.t === "array") {
      parts.push("[");
      stack.push("]");
      for (let i = top.items.length - 1; i >= 0; i--) {
        stack.push(top.items[i]);
        if (i > 0) stack.push(",");
      }
    } else {
      parts.push("{");
      stack.push("}");
      for (let i = top.entries.length - 1; i >= 0; i--) {
        stack.push(top.entries[i][1]);
        stack.push(JSON.stringify(top.entries[i][0]) + ":");
        if (i > 0) stack.push(",");
      }
    }
  }
  return parts.join("");
}

/**
 * Values that break careless parsers, as JSON text: huge, negative, fractional and
 * non-finite-looking numbers (`1e999` parses to Infinity), numbers as strings, strings with
 * newlines and NUL, wrong types, a long string and a value nested 100,000 deep.
 */
export const NASTY_JSON: readonly string[] = [
  "0",
  "-1",
  "1",
  "-0",
  "0.5",
  "1e308",
  "-1e308",
  "1e999",
  "-1e999",
  "1e-320",
  "4294967296",
  "2147483648",
  "9007199254740993",
  "18446744073709551615",
  '"NaN"',
  '"Infinity"',
  '"-1"',
  '"12"',
  '""',
  '"a\\nb"',
  '"\\u0000"',
  '"__proto__"',
  "null",
  "true",
  "false",
  "[]",
  "{}",
  "[1,2,3]",
  '{"a":1}',
  JSON.stringify("x".repeat(5000)),
  "[".repeat(100_000) + "]".repeat(100_000),
];

/** Keys worth adding to objects. */
const NASTY_KEYS = [
  "__proto__",
  "constructor",
  "toString",
  "",
  "a\nb",
  "layers",
  "offset",
  "length",
];

interface Slot {
  node: JsonNode;
  /** Replace this node in its parent. */
  set: ((n: JsonNode) => void) | null;
}

function slots(root: JsonNode): Slot[] {
  const out: Slot[] = [{ node: root, set: null }];
  for (let i = 0; i < out.length && out.length < 100_000; i++) {
    const n = out[i].node;
    if (n.t === "array") {
      n.items.forEach((child, k) => out.push({ node: child, set: (m) => (n.items[k] = m) }));
    } else if (n.t === "object") {
      n.entries.forEach((entry) => out.push({ node: entry[1], set: (m) => (entry[1] = m) }));
    }
  }
  return out;
}

function tweakNumber(text: string, rng: FuzzRng): string {
  const n = Number(text);
  const options = [n + 1, n - 1, n * 2, -n, n * 4096, n + 4096, 0, n / 2, n * 1e6, 2 ** 53 - n];
  const v = rng.pick(options);
  return rng.chance(0.15) ? JSON.stringify(String(v)) : Number.isFinite(v) ? String(v) : "1e999";
}

function clone(node: JsonNode): JsonNode {
  return structuredClone(node);
}

/** Apply one structural edit to the tree; returns what it did. */
function editOnce(root: JsonNode, rng: FuzzRng): string {
  const all = slots(root);
  const target = rng.pick(all);
  const containers = all.filter((s) => s.node.t !== "raw");
  const kind = rng.pick([
    "nasty",
    "nasty",
    "tweak",
    "tweak",
    "drop",
    "duplicate",
    "add",
    "copy",
    "wrap",
  ]);
  if (kind === "tweak" || kind === "nasty") {
    // Prefer numbers for tweaks: they hold the sizes and offsets.
    const numbers = all.filter((s) => s.node.t === "raw" && /^-?\d/.test(s.node.text) && s.set);
    if (kind === "tweak" && numbers.length) {
      const s = rng.pick(numbers);
      const before = (s.node as { text: string }).text;
      const after = tweakNumber(before, rng);
      s.set!({ t: "raw", text: after });
      return `number ${before} -> ${after}`;
    }
    if (!target.set) return "kept the root";
    const text = rng.pick(NASTY_JSON);
    target.set({ t: "raw", text });
    return `a value -> ${text.slice(0, 24)}${text.length > 24 ? "..." : ""}`;
  }
  if (kind === "copy" && target.set) {
    const source = rng.pick(all);
    target.set(clone(source.node));
    return "a value -> a copy of another";
  }
  if (kind === "wrap" && target.set) {
    target.set({ t: "array", items: [clone(target.node)] });
    return "a value -> [value]";
  }
  if (!containers.length) return "nothing to edit";
  const c = rng.pick(containers).node;
  if (c.t === "array") {
    if (kind === "drop" && c.items.length) {
      c.items.splice(rng.int(c.items.length), 1);
      return "dropped an array item";
    }
    const item = c.items.length && rng.chance(0.5)
      ? clone(rng.pick(c.items))
      : { t: "raw" as const, text: rng.pick(NASTY_JSON) };
    c.items.splice(rng.int(c.items.length + 1), 0, item);
    return "added an array item";
  }
  if (c.t !== "object") return "nothing to edit";
  if (kind === "drop" && c.entries.length) {
    const [key] = c.entries.splice(rng.int(c.entries.length), 1)[0];
    return `dropped key ${JSON.stringify(key)}`;
  }
  if (kind === "duplicate" && c.entries.length) {
    const [key, value] = rng.pick(c.entries);
    const dup: JsonNode = rng.chance(0.5) ? clone(value) : { t: "raw", text: rng.pick(NASTY_JSON) };
    c.entries.splice(rng.int(c.entries.length + 1), 0, [key, dup]);
    return `duplicated key ${JSON.stringify(key)}`;
  }
  const key = rng.chance(0.5) ? rng.pick(NASTY_KEYS) : `k${rng.int(1000)}`;
  c.entries.splice(rng.int(c.entries.length + 1), 0, [key, {
    t: "raw",
    text: rng.pick(NASTY_JSON),
  }]);
  return `added key ${JSON.stringify(key)}`;
}

/**
 * Apply 1 to 3 structural edits to the JSON value `value` and return the new JSON text:
 * replace a value by a nasty one ({@linkcode NASTY_JSON}), change a number (+1, -1, x2,
 * negated, huge, fractional, as a string), drop a key or item, duplicate a key (the text then
 * holds the key twice), add a key, copy one subtree over another, or wrap a value in an array.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FuzzRng, mutateJson } from "./fuzz_helpers.ts";
 * const rng = new FuzzRng(3);
 * const { value, how } = mutateJson({ a: 1, b: [2, 3] }, rng);
 * assert.equal(typeof value, "string");
 * assert.ok(how.length > 0);
 * ```
 */
export function mutateJson(value: unknown, rng: FuzzRng): Mutated<string> {
  const root = toNode(value);
  const edits: string[] = [];
  const count = 1 + rng.int(3);
  for (let k = 0; k < count; k++) edits.push(editOnce(root, rng));
  return { value: nodeText(root), how: edits.join("; ") };
}

/** Characters worth inserting into short text inputs. */
const TEXT_PIECES = [
  "0",
  "1",
  "9",
  ".",
  "%",
  "ffn:",
  "KiB",
  "GB",
  "B",
  " ",
  "-",
  "+",
  "e",
  "E",
  "\n",
  "\u0000",
  "\u0663", // ARABIC-INDIC DIGIT THREE
  "\uff11", // FULLWIDTH DIGIT ONE
  "9".repeat(400),
  "0.",
  "x",
];

/**
 * One random edit of a short text (a command-line value): insert, delete or replace a piece,
 * duplicate a slice, or swap in a long run of digits.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FuzzRng, mutateText } from "./fuzz_helpers.ts";
 * const { value } = mutateText("2GB", new FuzzRng(9));
 * assert.equal(typeof value, "string");
 * ```
 */
export function mutateText(text: string, rng: FuzzRng): Mutated<string> {
  const p = rng.int(text.length + 1);
  const piece = rng.pick(TEXT_PIECES);
  switch (rng.int(4)) {
    case 0:
      return {
        value: text.slice(0, p) + piece + text.slice(p),
        how: `inserted ${JSON.stringify(piece.slice(0, 8))} at ${p}`,
      };
    case 1: {
      const n = 1 + rng.int(3);
      return { value: text.slice(0, p) + text.slice(p + n), how: `deleted ${n} chars at ${p}` };
    }
    case 2:
      return {
        value: text.slice(0, p) + piece + text.slice(p + 1),
        how: `replaced char ${p} by ${JSON.stringify(piece.slice(0, 8))}`,
      };
    default: {
      const q = rng.int(text.length + 1);
      const [a, b] = p < q ? [p, q] : [q, p];
      return {
        value: text.slice(0, b) + text.slice(a, b) + text.slice(b),
        how: `duplicated chars ${a}..${b}`,
      };
    }
  }
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
 * import { runFuzz } from "./fuzz_helpers.ts";
 * const report = await runFuzz("digits", 50, 1, (rng) => {
 *   const text = String(rng.int(100));
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
 * assert.deepEqual(report.failures, []);
 * ```
 */
export async function runFuzz(
  format: string,
  iterations: number,
  seed: number,
  make: (rng: FuzzRng, index: number) => FuzzCase | Promise<FuzzCase>,
): Promise<FuzzReport> {
  const rng = new FuzzRng(seed);
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
