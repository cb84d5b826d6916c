/**
 * The per-read bundle checksum against CRC-32 (mitata): one token's worth of OPT-1.3B
 * f16 bundles (d = 2048, 8 KiB each), as `SparseFlashFfn` checks them after a read.
 *
 * Run: `deno run -A io/bundle_hash_bench.ts`. Nothing runs on import.
 *
 * @module
 */

import { bench, run } from "npm:mitata@1";
import { bundleHash, bundleHashNaive, finiteMask } from "./bundle_hash.ts";
import { crc32 } from "./crc32.ts";

if (import.meta.main) {
  const d = 2048; // OPT-1.3B width
  const words = d; // an f16 bundle: 2 * d values of 2 bytes = d words
  const rows = 256;
  const bytes = new Uint8Array(rows * 4 * words); // (rows, 4 * words) bundles as stored
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  const w32 = new Uint32Array(bytes.buffer);
  const { mask, add } = finiteMask("f16");
  const flags = new Int32Array(1);
  const bundle = (r: number): Uint8Array => bytes.subarray(r * 4 * words, (r + 1) * 4 * words);
  bench(`crc32 (slicing-by-8), ${rows} f16 bundles of d=${d}`, () => {
    let s = 0;
    for (let r = 0; r < rows; r++) s ^= crc32(bundle(r));
    return s;
  });
  bench(`bundleHash + non-finite check, ${rows} bundles`, () => {
    let s = 0;
    for (let r = 0; r < rows; r++) s ^= bundleHash(w32, r * words, words, r, flags, mask, add);
    return s;
  });
  bench(`bundleHashNaive (reference), ${rows} bundles`, () => {
    let s = 0;
    for (let r = 0; r < rows; r++) s ^= bundleHashNaive(bundle(r), r);
    return s;
  });
  await run();
}
