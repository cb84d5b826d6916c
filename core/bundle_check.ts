/**
 * Every FFN bundle read from flash is checked before it is computed: its checksum against
 * the file's table (`header.bundleChecksums`, `io/bundle_hash.ts`) and, in the same pass,
 * its values for NaN and infinity. A bad bundle is an io error naming the file, the layer
 * and the neuron — or, with `onCorrupt: "skip"`, the neuron is left out of the token's FFN
 * and counted (`FfnStats.neuronsCorrupt`), never computed.
 *
 * @module
 */

import { bundleHash, finiteMask } from "../io/bundle_hash.ts";
import { FlashlmError } from "../io/errors.ts";
import type { WeightDtype } from "../kernels/weights.ts";

/** What a corrupt bundle does: stop with an io error (default), or skip the neuron. */
export type OnCorrupt = "error" | "skip";

/** The choices of `--on-corrupt`. */
export const ON_CORRUPT: readonly OnCorrupt[] = ["error", "skip"];

/** What a {@linkcode BundleChecker} needs of a model file (`FlashModelFile` has it all). */
export interface CheckedFile {
  /** The file's path, for error messages. */
  readonly path: string;
  /** The checksum of every bundle, (nLayers, dFfn). */
  readonly bundleChecksums: Uint32Array;
  /** The model's widths. */
  readonly config: { readonly dModel: number; readonly dFfn: number };
  /** Bytes of one bundle. */
  readonly bundleBytes: number;
  /** Storage dtype of the bundles. */
  readonly dtype: WeightDtype;
}

/** A word of `bad` bits is set by a non-finite f32 (an int8 bundle's scales). */
const F32 = finiteMask("f32");

/**
 * Checks bundles of one model file as they arrive in DRAM.
 *
 * @example A flipped byte is an error naming the layer and neuron, or a skip
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { BundleChecker } from "./bundle_check.ts";
 * import { FlashModelFile } from "./flash_file.ts";
 * import { makeSyntheticModel } from "../tools/make_model.ts";
 * const path = await Deno.makeTempFile({ suffix: ".flm" });
 * await makeSyntheticModel(path, { shape: "tiny", dtype: "f16" });
 * const file = await FlashModelFile.open(path);
 * const bundle = new Uint8Array(file.bundleBytes); // neuron 5 of layer 1, as read
 * const f = await Deno.open(path);
 * await f.seek(file.bundleOffset(1, 5), Deno.SeekMode.Start);
 * await f.read(bundle);
 * f.close();
 * const words = new Uint32Array(bundle.buffer);
 * const strict = new BundleChecker(file);
 * assert.equal(strict.check(1, 5, words, 0), true);
 * bundle[3] ^= 0x40;
 * assert.throws(() => strict.check(1, 5, words, 0), /layer 1 neuron 5 fails its checksum/);
 * const lenient = new BundleChecker(file, "skip");
 * assert.equal(lenient.check(1, 5, words, 0), false);
 * assert.equal(lenient.corrupt, 1);
 * await Deno.remove(path);
 * ```
 */
export class BundleChecker {
  /** What a bad bundle does. */
  readonly onCorrupt: OnCorrupt;
  /** Bundles found bad and skipped so far (`onCorrupt: "skip"`). */
  corrupt = 0;
  private path: string;
  private table: Uint32Array; // (nLayers, dFfn) the file's checksums
  private dFfn: number;
  private words: number; // 32-bit words per bundle
  private mask: number; // non-finite test of the values (0 for int8)
  private add: number;
  private bad: number;
  private scaleWords: number[] | null; // int8: the words of the parts' f32 scales
  private flags = new Int32Array(1);

  /** Check bundles of `model` (`onCorrupt` default `"error"`). */
  constructor(model: CheckedFile, onCorrupt: OnCorrupt = "error") {
    this.onCorrupt = onCorrupt;
    this.path = model.path;
    this.table = model.bundleChecksums;
    this.dFfn = model.config.dFfn;
    this.words = model.bundleBytes / 4;
    const { mask, add, bad } = finiteMask(model.dtype);
    this.mask = mask;
    this.add = add;
    this.bad = bad;
    const d = model.config.dModel;
    // int8 bundle: parts of [d int8 | f32 scale] (2, or 3 for a gated FFN)
    const parts = model.bundleBytes / (d + 4);
    this.scaleWords = model.dtype === "int8"
      ? Array.from({ length: parts }, (_, p) => (p * (d + 4) + d) / 4)
      : null;
  }

  /** Bytes of DRAM it holds (the file's checksum table). */
  byteSize(): number {
    return this.table.byteLength;
  }

  /**
   * Check neuron `neuron` of layer `layer`, whose bundle is `words[start :
   * start + bundleBytes / 4]`. True: it may be computed. A bad bundle throws an io
   * error, or (`"skip"`) is counted and returns false: the caller must not compute it.
   */
  check(layer: number, neuron: number, words: Uint32Array, start: number): boolean {
    const index = layer * this.dFfn + neuron;
    const flags = this.flags;
    flags[0] = 0;
    const hash = bundleHash(words, start, this.words, index, flags, this.mask, this.add);
    let nonFinite = (flags[0] & this.bad) !== 0;
    if (this.scaleWords !== null) {
      for (const at of this.scaleWords) {
        const w = words[start + at];
        if (((((w >>> 1) & F32.mask) + F32.add) & F32.bad) !== 0) nonFinite = true;
      }
    }
    if (hash === this.table[index] && !nonFinite) return true;
    if (this.onCorrupt === "skip") {
      this.corrupt++;
      return false;
    }
    const what = hash !== this.table[index]
      ? "fails its checksum (the file is corrupt, or the read returned other bytes)"
      : "holds a NaN or infinite weight";
    throw new FlashlmError(
      `FFN layer ${layer} neuron ${neuron} ${what}; \`flashlm verify\` checks the whole file, convert the model again to repair it, or pass --on-corrupt skip to leave such neurons out`,
      { file: this.path, kind: "io" },
    );
  }

  /**
   * Check `count` bundles of layer `layer`, neurons `first ..`, lying one after another
   * in `words` from word `start`; a bad one is zeroed (`"skip"`: a zero bundle adds
   * nothing to the FFN). Returns how many were bad.
   */
  checkRun(layer: number, first: number, count: number, words: Uint32Array, start = 0): number {
    let bad = 0;
    for (let i = 0; i < count; i++) {
      const at = start + i * this.words;
      if (!this.check(layer, first + i, words, at)) {
        words.fill(0, at, at + this.words);
        bad++;
      }
    }
    return bad;
  }
}

/**
 * The checksums a writer stores: each of layer `layer`'s `dFfn` bundles (`bytes`, in
 * bundle order) into `out[layer * dFfn + neuron]`, seeded with that index.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { hashBundles } from "./bundle_check.ts";
 * import { bundleHashNaive } from "../io/bundle_hash.ts";
 * const bytes = new Uint8Array(2 * 16).map((_, i) => i); // 2 bundles of 16 bytes
 * const out = new Uint32Array(2 * 2); // (nLayers, dFfn)
 * hashBundles(bytes, 2, 1, out);
 * assert.equal(out[3], bundleHashNaive(bytes.subarray(16), 3)); // layer 1, neuron 1
 * ```
 */
export function hashBundles(
  bytes: Uint8Array,
  dFfn: number,
  layer: number,
  out: Uint32Array,
): void {
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
  const perBundle = words.length / dFfn;
  for (let n = 0; n < dFfn; n++) {
    const index = layer * dFfn + n;
    out[index] = bundleHash(words, n * perBundle, perBundle, index);
  }
}
