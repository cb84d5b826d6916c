/**
 * CRC-32 (IEEE 802.3, the one zlib, gzip and PNG use): reflected polynomial 0xEDB88320,
 * initial value and final xor 0xFFFFFFFF. Incremental: `crc32(b, crc32(a)) === crc32(a ++ b)`.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Tables

/** The reflected IEEE polynomial. */
const POLY = 0xedb88320;

/**
 * Slicing-by-8 tables: `TABLES[k * 256 + i]` is the CRC contribution of byte `i` followed by
 * `k` zero bytes. `TABLES[0..256)` is the classic one-byte table.
 */
// (8 * 256,)
const TABLES: Uint32Array = buildTables();

function buildTables(): Uint32Array {
  const t = new Uint32Array(8 * 256); // (8 * 256,)
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let k = 1; k < 8; k++) {
    for (let i = 0; i < 256; i++) {
      const prev = t[(k - 1) * 256 + i];
      t[k * 256 + i] = ((prev >>> 8) ^ t[prev & 0xff]) >>> 0;
    }
  }
  return t;
}

// ---------------------------------------------------------------------------
// Reference (bit by bit)

/**
 * The plain bit-at-a-time CRC-32, the reference {@linkcode crc32} is tested against.
 *
 * @param data The bytes to checksum.
 * @param previous The CRC of the bytes before `data` (0 to start).
 * @returns The CRC-32 of everything so far, as an unsigned 32-bit integer.
 *
 * @example Known value
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { crc32Naive } from "./crc32.ts";
 * assert(crc32Naive(new TextEncoder().encode("123456789")) === 0xcbf43926);
 * ```
 */
export function crc32Naive(data: Uint8Array, previous = 0): number {
  let c = ~previous >>> 0;
  for (let i = 0; i < data.length; i++) {
    c ^= data[i];
    for (let bit = 0; bit < 8; bit++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
  }
  return ~c >>> 0;
}

// ---------------------------------------------------------------------------
// Tuned (slicing-by-8)

/**
 * CRC-32 of `data`, continuing from `previous`. Identical to {@linkcode crc32Naive} but
 * table-driven and unrolled to consume 8 bytes per step (slicing-by-8).
 *
 * @param data The bytes to checksum.
 * @param previous The CRC of the bytes before `data` (0 to start).
 * @returns The CRC-32 of everything so far, as an unsigned 32-bit integer.
 *
 * @example Known value, and incremental use
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { crc32 } from "./crc32.ts";
 * const bytes = new TextEncoder().encode("123456789");
 * assert(crc32(bytes) === 0xcbf43926);
 * assert(crc32(bytes.subarray(4), crc32(bytes.subarray(0, 4))) === 0xcbf43926);
 * ```
 */
export function crc32(data: Uint8Array, previous = 0): number {
  const t = TABLES;
  let c = ~previous >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const a = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c = t[7 * 256 + (a & 0xff)] ^
      t[6 * 256 + ((a >>> 8) & 0xff)] ^
      t[5 * 256 + ((a >>> 16) & 0xff)] ^
      t[4 * 256 + (a >>> 24)] ^
      t[3 * 256 + data[i + 4]] ^
      t[2 * 256 + data[i + 5]] ^
      t[1 * 256 + data[i + 6]] ^
      t[data[i + 7]];
  }
  for (; i < n; i++) c = (c >>> 8) ^ t[(c ^ data[i]) & 0xff];
  return ~c >>> 0;
}
