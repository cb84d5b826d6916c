/**
 * The text side of a Hugging Face `tokenizer.json` before BPE, for core/hf_tokenizer.ts:
 * normalizers (NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Sequence) and pre-tokenizers
 * (ByteLevel, Split, Metaspace, Digits, Sequence) built from their JSON specs, and the
 * tokenizers library's regexes as JavaScript ones.
 *
 * @module
 */

import { FlashlmError, showValue } from "../io/errors.ts";
import { unicodeOfByte } from "./gpt2_bpe.ts";

/** GPT-2's split regex, the ByteLevel pre-tokenizer's default. */
export const GPT2_SPLIT_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Llama 3's split regex (tiktoken's cl100k_base), as its tokenizer.json writes it. */
export const LLAMA3_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" +
  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ---------------------------------------------------------------------------
// Parsing helpers

export type Json = Record<string, unknown>;

/** Whether `value` is a JSON object (not null, not an array). */
export function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * A tokenizers regex as a JavaScript one (flags `gu`): `(?i:…)` groups, which JavaScript
 * engines do not all accept, are rewritten with each ASCII letter as `[xX]`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hfRegex } from "./hf_pretokenize.ts";
 * assert.equal(hfRegex("(?i:'s|'t)| ?x", "f").source, "(?:'[sS]|'[tT])| ?x");
 * ```
 */
export function hfRegex(pattern: string, field: string, file = ""): RegExp {
  let source = "";
  for (let i = 0; i < pattern.length;) {
    if (!pattern.startsWith("(?i:", i)) {
      const step = pattern[i] === "\\" ? 2 : 1; // keep escapes whole
      source += pattern.slice(i, i + step);
      i += step;
      continue;
    }
    source += "(?:";
    let depth = 1;
    let inClass = false;
    for (i += 4; i < pattern.length && depth > 0; i++) {
      const ch = pattern[i];
      if (ch === "\\") {
        source += pattern.slice(i, i + 2);
        i++;
        continue;
      }
      if (!inClass && ch === "(") depth++;
      if (!inClass && ch === ")") depth--;
      if (ch === "[") inClass = true;
      if (ch === "]") inClass = false;
      if (/[a-zA-Z]/.test(ch) && !inClass) source += `[${ch.toLowerCase()}${ch.toUpperCase()}]`;
      else if (/[a-zA-Z]/.test(ch)) source += ch.toLowerCase() + ch.toUpperCase();
      else source += ch;
    }
  }
  try {
    return new RegExp(source, "gu");
  } catch (err) {
    throw new FlashlmError(
      `${field} ${showValue(pattern)} is not a regex JavaScript can run (${
        (err as Error).message
      })`,
      { file: file || undefined, kind: "config", cause: err },
    );
  }
}

/** `text` as a regex that matches it literally. */
export function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// ---------------------------------------------------------------------------
// Normalizers and pre-tokenizers

export type Normalize = (text: string) => string;
/** Splits words further: each pre-tokenizer maps a word to its parts. */
export type PreTokenize = (word: string, first: boolean) => string[];

/** `spec[key]` if it is a string, `fallback` if absent; anything else is an error naming it. */
function stringField(
  spec: Json,
  key: string,
  fallback: string,
  field: string,
  file: string,
): string {
  const value = spec[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "string") {
    throw new FlashlmError(`${field}.${key} is ${showValue(value)}, expected a string`, {
      file,
      kind: "config",
    });
  }
  return value;
}

/** A `Split` pre-tokenizer's (or Replace normalizer's) pattern: `{String: …}` or `{Regex: …}`. */
function patternOf(spec: Json, field: string, file: string): RegExp {
  const pattern = spec.pattern;
  if (isObject(pattern) && typeof pattern.String === "string") {
    return new RegExp(escapeRegex(pattern.String), "gu");
  }
  if (isObject(pattern) && typeof pattern.Regex === "string") {
    return hfRegex(pattern.Regex, `${field}.pattern.Regex`, file);
  }
  throw new FlashlmError(
    `${field}.pattern is ${showValue(pattern)}, expected {String} or {Regex}`,
    {
      file,
      kind: "config",
    },
  );
}

/** The normalizer a `normalizer` spec describes (null for none); `field` names it in errors. */
export function makeNormalizer(spec: unknown, field: string, file: string): Normalize | null {
  if (spec === null || spec === undefined) return null;
  const type = isObject(spec) ? spec.type : undefined;
  const s = spec as Json;
  switch (type) {
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
      return (text) => text.normalize(type);
    case "Lowercase":
      return (text) => text.toLowerCase();
    case "Prepend": {
      const prepend = stringField(s, "prepend", "", field, file);
      return (text) => text === "" ? text : prepend + text;
    }
    case "Replace": {
      const pattern = patternOf(s, field, file);
      const content = stringField(s, "content", "", field, file);
      return (text) => text.replace(pattern, () => content);
    }
    case "Sequence": {
      const parts = (Array.isArray(s.normalizers) ? s.normalizers : []).map((n, k) =>
        makeNormalizer(n, `${field}.normalizers[${k}]`, file)
      ).filter((n): n is Normalize => n !== null);
      return (text) => parts.reduce((t, n) => n(t), text);
    }
    default:
      throw new FlashlmError(
        `${field}.type ${showValue(type)} is not supported (NFC, NFD, NFKC, NFKD, Lowercase, ` +
          "Prepend, Replace, Sequence)",
        { file, kind: "config" },
      );
  }
}

/** Cut `word` at the matches of `regex`, as tokenizers' `Split` does with `behavior`. */
export function splitBy(word: string, regex: RegExp, behavior: string, invert: boolean): string[] {
  // Pieces alternate: [gap, match, gap, match, ..., gap]; with `invert` the roles swap.
  const pieces: { text: string; isMatch: boolean }[] = [];
  let last = 0;
  for (const m of word.matchAll(regex)) {
    if (m[0] === "") continue;
    if (m.index! > last) pieces.push({ text: word.slice(last, m.index), isMatch: invert });
    pieces.push({ text: m[0], isMatch: !invert });
    last = m.index! + m[0].length;
  }
  if (last < word.length) pieces.push({ text: word.slice(last), isMatch: invert });
  const out: string[] = [];
  let pending = ""; // a delimiter waiting to be merged with the next piece
  for (const { text, isMatch } of pieces) {
    if (!isMatch) {
      out.push(pending + text);
      pending = "";
    } else if (behavior === "Isolated") out.push(text);
    else if (behavior === "MergedWithPrevious" && out.length > 0 && pending === "") {
      out[out.length - 1] += text;
    } else if (behavior === "MergedWithPrevious") out.push(text);
    else if (behavior === "MergedWithNext") pending += text;
    // "Removed": dropped
  }
  if (pending !== "") out.push(pending);
  return out;
}

const SPLIT_BEHAVIORS = new Set([
  "Isolated",
  "Removed",
  "MergedWithPrevious",
  "MergedWithNext",
]);

/** The pre-tokenizers a `pre_tokenizer` spec describes, in order; `field` names it in errors. */
export function makePreTokenizer(spec: unknown, field: string, file: string): PreTokenize[] {
  if (spec === null || spec === undefined) return [];
  const type = isObject(spec) ? spec.type : undefined;
  const s = spec as Json;
  switch (type) {
    case "ByteLevel": {
      const prefix = s.add_prefix_space === true;
      const regex = s.use_regex === false ? null : hfRegex(GPT2_SPLIT_PATTERN, field, file);
      return [(word, first) => {
        const text = prefix && first && !word.startsWith(" ") ? " " + word : word;
        const parts = regex === null ? [text] : splitBy(text, regex, "Isolated", false);
        return parts.map(toByteLevel);
      }];
    }
    case "Split": {
      const regex = patternOf(s, field, file);
      const behavior = stringField(s, "behavior", "Isolated", field, file);
      if (!SPLIT_BEHAVIORS.has(behavior)) {
        throw new FlashlmError(`${field}.behavior ${showValue(behavior)} is not supported`, {
          file,
          kind: "config",
        });
      }
      const invert = s.invert === true;
      return [(word) => splitBy(word, regex, behavior, invert)];
    }
    case "Metaspace": {
      const replacement = stringField(s, "replacement", "▁", field, file);
      const scheme = stringField(
        s,
        "prepend_scheme",
        s.add_prefix_space === false ? "never" : "always",
        field,
        file,
      );
      const split = s.split !== false;
      const space = new RegExp(escapeRegex(replacement), "gu");
      return [(word, first) => {
        let text = word.replaceAll(" ", replacement);
        const prepend = scheme === "always" || (scheme === "first" && first);
        if (prepend && !text.startsWith(replacement)) text = replacement + text;
        return split ? splitBy(text, space, "MergedWithNext", false) : [text];
      }];
    }
    case "Digits": {
      const regex = s.individual_digits === true ? /\p{N}/gu : /\p{N}+/gu;
      return [(word) => splitBy(word, regex, "Isolated", false)];
    }
    case "Sequence": {
      const list = Array.isArray(s.pretokenizers) ? s.pretokenizers : [];
      return list.flatMap((p, k) => makePreTokenizer(p, `${field}.pretokenizers[${k}]`, file));
    }
    default:
      throw new FlashlmError(
        `${field}.type ${showValue(type)} is not supported (ByteLevel, Split, Metaspace, ` +
          "Digits, Sequence)",
        { file, kind: "config" },
      );
  }
}

const UTF8_ENCODER = new TextEncoder();

/** Text as its UTF-8 bytes spelled in GPT-2's byte-to-unicode characters. */
export function toByteLevel(text: string): string {
  let out = "";
  for (const b of UTF8_ENCODER.encode(text)) out += unicodeOfByte(b);
  return out;
}
