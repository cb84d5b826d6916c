/**
 * Byte sizes as people write them (`32K`, `2GiB`, `4096`) and as `bench io` prints them.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// Sizes

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1e3,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1e6,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1e9,
};

/**
 * Parse a byte size: a number with an optional unit, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`
 * (powers of 1024) or `KB`/`MB`/`GB` (powers of 1000). A bad size is a `usage` error.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseByteSize } from "./byte_size.ts";
 * assert.equal(parseByteSize("2GiB"), 2 ** 31);
 * assert.equal(parseByteSize("32k"), 32768);
 * assert.equal(parseByteSize("1000"), 1000);
 * ```
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  const value = m && unit !== undefined ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new FlashlmError(`bad size "${text}" (write e.g. 4096, 32KiB, 2GiB)`, { kind: "usage" });
  }
  return value;
}

/**
 * `bytes` as a short binary size: `4K`, `128K`, `1M`, `2G`, or plain bytes.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { formatByteSize } from "./byte_size.ts";
 * assert.equal(formatByteSize(32768), "32K");
 * assert.equal(formatByteSize(2 ** 31), "2G");
 * ```
 */
export function formatByteSize(bytes: number): string {
  for (const [unit, size] of [["G", 1024 ** 3], ["M", 1024 ** 2], ["K", 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}
