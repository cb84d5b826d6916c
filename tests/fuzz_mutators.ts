/**
 * Seeded mutators for fuzzing (see `tests/fuzz_test.ts`): byte edits of binary files
 * ({@linkcode mutateBytes}), structural edits of JSON ({@linkcode mutateJson}) and edits of
 * short command-line text ({@linkcode mutateText}). Each takes flashlm's one random generator
 * (`Rng` of core/sampler.ts), so the same seed gives the same cases.
 *
 * @module
 */

import type { Rng } from "../core/sampler.ts";
import { chance, pickOne, randomInt } from "./fuzz_helpers.ts";

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
 * import { Rng } from "../core/sampler.ts";
 * import { mutateBytes } from "./fuzz_mutators.ts";
 * const input = new Uint8Array(64).fill(7);
 * const options = { lengthFields: [{ offset: 0, size: 8 as const }] };
 * const { value, how } = mutateBytes(input, new Rng(1), options);
 * assert.ok(how.length > 0);
 * assert.ok(value !== input && input.every((b) => b === 7), "the input is left alone");
 * assert.deepEqual(mutateBytes(input, new Rng(1), options).value, value, "same seed, same case");
 * ```
 */
export function mutateBytes(
  bytes: Uint8Array,
  rng: Rng,
  options: ByteMutationOptions = {},
): Mutated<Uint8Array> {
  const position = (): number => {
    const f = options.focus;
    if (f && f[1] > f[0] && chance(rng, 0.8)) {
      return Math.min(bytes.length, f[0] + randomInt(rng, f[1] - f[0]));
    }
    return randomInt(rng, bytes.length + 1);
  };
  const fields = options.lengthFields ?? [];
  const kinds = ["flip", "flip", "byte", "insert", "delete", "truncate", "copy"];
  if (fields.length) kinds.push("length", "length");
  const kind = bytes.length === 0 ? "insert" : pickOne(rng, kinds);
  switch (kind) {
    case "flip": {
      const out = bytes.slice();
      const flips = 1 + randomInt(rng, 3);
      const at: number[] = [];
      for (let k = 0; k < flips; k++) {
        const p = Math.min(position(), out.length - 1);
        out[p] ^= 1 << randomInt(rng, 8);
        at.push(p);
      }
      return { value: out, how: `flipped bits at ${at.join(", ")}` };
    }
    case "byte": {
      const out = bytes.slice();
      const p = Math.min(position(), out.length - 1);
      out[p] = pickOne(rng, INTERESTING_BYTES);
      return { value: out, how: `set byte ${p} to 0x${out[p].toString(16)}` };
    }
    case "insert": {
      const p = position();
      const n = 1 + randomInt(rng, 8);
      const out = new Uint8Array(bytes.length + n);
      out.set(bytes.subarray(0, p));
      for (let k = 0; k < n; k++) {
        out[p + k] = chance(rng, 0.5) ? pickOne(rng, INTERESTING_BYTES) : randomInt(rng, 256);
      }
      out.set(bytes.subarray(p), p + n);
      return { value: out, how: `inserted ${n} bytes at ${p}` };
    }
    case "delete": {
      const p = Math.min(position(), bytes.length - 1);
      const n = Math.min(1 + randomInt(rng, 8), bytes.length - p);
      const out = new Uint8Array(bytes.length - n);
      out.set(bytes.subarray(0, p));
      out.set(bytes.subarray(p + n), p);
      return { value: out, how: `deleted ${n} bytes at ${p}` };
    }
    case "truncate": {
      const n = chance(rng, 0.3) ? randomInt(rng, Math.min(bytes.length, 64)) : position();
      return { value: bytes.slice(0, n), how: `truncated to ${n} bytes` };
    }
    case "copy": {
      const from = randomInt(rng, bytes.length);
      const n = Math.min(1 + randomInt(rng, 32), bytes.length - from);
      const to = Math.min(position(), bytes.length - n);
      const out = bytes.slice();
      out.copyWithin(to, from, from + n);
      return { value: out, how: `copied ${n} bytes from ${from} to ${to}` };
    }
    default: {
      const field = pickOne(rng, fields);
      const out = bytes.slice();
      if (out.length < field.offset + field.size) {
        return { value: out, how: "length field cut off" };
      }
      const view = new DataView(out.buffer);
      let v = pickOne(rng, lengthValues(bytes.length));
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

function tweakNumber(text: string, rng: Rng): string {
  const n = Number(text);
  const options = [n + 1, n - 1, n * 2, -n, n * 4096, n + 4096, 0, n / 2, n * 1e6, 2 ** 53 - n];
  const v = pickOne(rng, options);
  return chance(rng, 0.15) ? JSON.stringify(String(v)) : Number.isFinite(v) ? String(v) : "1e999";
}

function clone(node: JsonNode): JsonNode {
  return structuredClone(node);
}

/** Apply one structural edit to the tree; returns what it did. */
function editOnce(root: JsonNode, rng: Rng): string {
  const all = slots(root);
  const target = pickOne(rng, all);
  const containers = all.filter((s) => s.node.t !== "raw");
  const kind = pickOne(rng, [
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
      const s = pickOne(rng, numbers);
      const before = (s.node as { text: string }).text;
      const after = tweakNumber(before, rng);
      s.set!({ t: "raw", text: after });
      return `number ${before} -> ${after}`;
    }
    if (!target.set) return "kept the root";
    const text = pickOne(rng, NASTY_JSON);
    target.set({ t: "raw", text });
    return `a value -> ${text.slice(0, 24)}${text.length > 24 ? "..." : ""}`;
  }
  if (kind === "copy" && target.set) {
    const source = pickOne(rng, all);
    target.set(clone(source.node));
    return "a value -> a copy of another";
  }
  if (kind === "wrap" && target.set) {
    target.set({ t: "array", items: [clone(target.node)] });
    return "a value -> [value]";
  }
  if (!containers.length) return "nothing to edit";
  const c = pickOne(rng, containers).node;
  if (c.t === "array") {
    if (kind === "drop" && c.items.length) {
      c.items.splice(randomInt(rng, c.items.length), 1);
      return "dropped an array item";
    }
    const item = c.items.length && chance(rng, 0.5)
      ? clone(pickOne(rng, c.items))
      : { t: "raw" as const, text: pickOne(rng, NASTY_JSON) };
    c.items.splice(randomInt(rng, c.items.length + 1), 0, item);
    return "added an array item";
  }
  if (c.t !== "object") return "nothing to edit";
  if (kind === "drop" && c.entries.length) {
    const [key] = c.entries.splice(randomInt(rng, c.entries.length), 1)[0];
    return `dropped key ${JSON.stringify(key)}`;
  }
  if (kind === "duplicate" && c.entries.length) {
    const [key, value] = pickOne(rng, c.entries);
    const dup: JsonNode = chance(rng, 0.5)
      ? clone(value)
      : { t: "raw", text: pickOne(rng, NASTY_JSON) };
    c.entries.splice(randomInt(rng, c.entries.length + 1), 0, [key, dup]);
    return `duplicated key ${JSON.stringify(key)}`;
  }
  const key = chance(rng, 0.5) ? pickOne(rng, NASTY_KEYS) : `k${randomInt(rng, 1000)}`;
  c.entries.splice(randomInt(rng, c.entries.length + 1), 0, [key, {
    t: "raw",
    text: pickOne(rng, NASTY_JSON),
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
 * import { Rng } from "../core/sampler.ts";
 * import { mutateJson } from "./fuzz_mutators.ts";
 * const original = { a: 1, b: [2, 3] };
 * const { value, how } = mutateJson(original, new Rng(3));
 * assert.ok(how.length > 0);
 * assert.deepEqual(original, { a: 1, b: [2, 3] }, "the input is left alone");
 * assert.equal(mutateJson(original, new Rng(3)).value, value, "same seed, same text");
 * ```
 */
export function mutateJson(value: unknown, rng: Rng): Mutated<string> {
  const root = toNode(value);
  const edits: string[] = [];
  const count = 1 + randomInt(rng, 3);
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
 * import { Rng } from "../core/sampler.ts";
 * import { mutateText } from "./fuzz_mutators.ts";
 * const { value, how } = mutateText("2GB", new Rng(9));
 * assert.ok(how.length > 0);
 * assert.equal(mutateText("2GB", new Rng(9)).value, value, "same seed, same text");
 * ```
 */
export function mutateText(text: string, rng: Rng): Mutated<string> {
  const p = randomInt(rng, text.length + 1);
  const piece = pickOne(rng, TEXT_PIECES);
  switch (randomInt(rng, 4)) {
    case 0:
      return {
        value: text.slice(0, p) + piece + text.slice(p),
        how: `inserted ${JSON.stringify(piece.slice(0, 8))} at ${p}`,
      };
    case 1: {
      const n = 1 + randomInt(rng, 3);
      return { value: text.slice(0, p) + text.slice(p + n), how: `deleted ${n} chars at ${p}` };
    }
    case 2:
      return {
        value: text.slice(0, p) + piece + text.slice(p + 1),
        how: `replaced char ${p} by ${JSON.stringify(piece.slice(0, 8))}`,
      };
    default: {
      const q = randomInt(rng, text.length + 1);
      const [a, b] = p < q ? [p, q] : [q, p];
      return {
        value: text.slice(0, b) + text.slice(a, b) + text.slice(b),
        how: `duplicated chars ${a}..${b}`,
      };
    }
  }
}
