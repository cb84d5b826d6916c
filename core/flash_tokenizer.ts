/**
 * The tokenizer section of a flashlm file (`core/flash_format.ts`): the model's tokenizer
 * files stored by name, one after the other — whatever kind the tokenizer is
 * (`tokenizer.model`, `tokenizer.json`, `vocab.json` + `merges.txt`, llama2.c's
 * `tokenizer.bin`, ...: `TOKENIZER_FILE_NAMES`). Version 1 and 2 files stored vocab.json then
 * merges.txt, by length; they are read as those two files.
 *
 * @module
 */

import { showValue } from "../io/errors.ts";
import { TOKENIZER_FILE_NAMES } from "./tokenizer_files.ts";

// ---------------------------------------------------------------------------
// The section

/** The tokenizer section: the tokenizer's files, one after the other. */
export interface TokenizerSection {
  /** Absolute byte offset of the section. */
  offset: number;
  /** Bytes of the section. */
  length: number;
  /** CRC-32 of those bytes. */
  crc32: number;
  /** The files, each at an offset relative to the section. */
  files: { name: string; offset: number; length: number }[];
}

// ---------------------------------------------------------------------------
// Checking the header's entry

function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * The header's tokenizer section entry `entry`, checked (its files by name; versions 1 and
 * 2 held vocab.json then merges.txt, and are refused before this as older than the bundle
 * checksums). Offsets and lengths against the file are the caller's to check; `fail`
 * throws the caller's error.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { checkTokenizerSection } from "./flash_tokenizer.ts";
 * const fail = (m: string): never => {
 *   throw new Error(m);
 * };
 * const t = checkTokenizerSection({ offset: 4096, length: 15, crc32: 7,
 *   files: [{ name: "vocab.json", offset: 0, length: 10 }, { name: "merges.txt", offset: 10, length: 5 }] }, fail);
 * assert.deepEqual(t.files.map((f) => [f.name, f.offset, f.length]), [["vocab.json", 0, 10], ["merges.txt", 10, 5]]);
 * assert.throws(() => checkTokenizerSection({ ...t, files: [{ name: "x.txt", offset: 0, length: 1 }] }, fail), /unknown file "x.txt"/);
 * ```
 */
export function checkTokenizerSection(
  entry: unknown,
  fail: (m: string) => never,
): TokenizerSection {
  const t = entry as Record<string, unknown>;
  if (!isObject(t)) fail("tokenizer section is malformed");
  if (!isCount(t.length) || !Array.isArray(t.files)) fail("tokenizer section is malformed");
  const names = new Set<string>();
  let end = 0;
  for (const f of t.files as unknown[]) {
    const file = isObject(f) ? f : {};
    const name = file.name;
    if (typeof name !== "string" || !TOKENIZER_FILE_NAMES.includes(name)) {
      fail(
        `tokenizer section holds unknown file ${showValue(name)} (known: ${
          TOKENIZER_FILE_NAMES.join(", ")
        })`,
      );
    }
    if (names.has(name as string)) fail(`tokenizer file ${name} appears twice`);
    names.add(name as string);
    if (!isCount(file.offset) || !isCount(file.length) || (file.offset as number) < end) {
      fail(`tokenizer file ${name} has an invalid or overlapping offset or length`);
    }
    end = (file.offset as number) + (file.length as number);
    if (end > (t.length as number)) fail(`tokenizer file ${name} lies outside its section`);
  }
  return t as unknown as TokenizerSection;
}
