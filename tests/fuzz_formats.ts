/**
 * The valid inputs the fuzz tests mutate (see `tests/fuzz_test.ts`), one format at a time,
 * and the format-aware edits that need more than byte flips: a safetensors file with a new
 * JSON header, a flashlm file with a new (re-signed) header and the byte ranges its
 * checksums cover, and a NaN or infinity written into a tensor.
 *
 * @module
 */

import { convertHfToFlash } from "../core/convert.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { PREAMBLE_BYTES } from "../core/flash_format.ts";
import { rewriteWithPredictor } from "../core/flash_write.ts";
import { LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { Rng } from "../core/sampler.ts";
import { crc32 } from "../io/crc32.ts";
import { writeSafetensors } from "../io/safetensors_write.ts";
import { buildSyntheticHfModel } from "../tools/demo_model.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------
// safetensors

/**
 * The bytes of a valid safetensors file with every float dtype, an empty tensor and
 * metadata, written to `dir/base.safetensors`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { parseSafetensorsHeader } from "../io/safetensors.ts";
 * import { safetensorsBase } from "./fuzz_formats.ts";
 * const dir = await Deno.makeTempDir();
 * const bytes = await safetensorsBase(dir);
 * const header = parseSafetensorsHeader(bytes, bytes.length, "base.safetensors");
 * assert.deepEqual([...header.tensors.keys()].sort(), ["a", "b", "c", "d"]);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function safetensorsBase(dir: string): Promise<Uint8Array> {
  const path = `${dir}/base.safetensors`;
  const values = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => i / 4 - 1);
  await writeSafetensors(path, [
    { name: "a", dtype: "F32", shape: [3, 4], data: values(12) },
    { name: "b", dtype: "F16", shape: [5], data: values(5) },
    { name: "c", dtype: "BF16", shape: [2, 3], data: values(6) },
    { name: "d", dtype: "F32", shape: [0], data: values(0) },
  ], { format: "pt" });
  return await Deno.readFile(path);
}

/**
 * A safetensors file `base` with its JSON header replaced by `json`, the length field set to
 * the new header's exact length; with `pad`, the header is padded with spaces to a multiple of
 * 8 bytes (as Python's writer does).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { withSafetensorsHeader } from "./fuzz_formats.ts";
 * const base = new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d, 9, 9]); // "{}" + 2 data bytes
 * const out = withSafetensorsHeader(base, '{"a":1}', true);
 * assert.equal(new DataView(out.buffer).getBigUint64(0, true), 8n);
 * assert.equal(new TextDecoder().decode(out.subarray(8, 16)), '{"a":1} ');
 * assert.deepEqual([...out.subarray(16)], [9, 9], "the data follows unchanged");
 * ```
 */
export function withSafetensorsHeader(base: Uint8Array, json: string, pad: boolean): Uint8Array {
  const n = Number(new DataView(base.buffer, base.byteOffset).getBigUint64(0, true));
  const data = base.subarray(8 + n);
  const header = enc.encode(
    json + " ".repeat(pad ? (8 - (enc.encode(json).length % 8)) % 8 : 0),
  );
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

/**
 * Write `value` at element `index` of tensor `name` in the safetensors file at `path` (an F32
 * tensor takes it as is; an F16 or BF16 one takes NaN or the infinity of its sign).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readSafetensorsHeader, readTensorF32 } from "../io/safetensors_read.ts";
 * import { writeSafetensors } from "../io/safetensors_write.ts";
 * import { pokeTensor } from "./fuzz_formats.ts";
 * const path = `${await Deno.makeTempDir()}/t.safetensors`;
 * await writeSafetensors(path, [{ name: "w", dtype: "F32", shape: [3], data: new Float32Array(3) }]);
 * await pokeTensor(path, "w", 1, NaN);
 * const values = await readTensorF32(await readSafetensorsHeader(path), "w");
 * assert.ok(values[0] === 0 && Number.isNaN(values[1]) && values[2] === 0);
 * ```
 */
export async function pokeTensor(
  path: string,
  name: string,
  index: number,
  value: number,
): Promise<void> {
  const bytes = await Deno.readFile(path);
  const view = new DataView(bytes.buffer);
  const n = Number(view.getBigUint64(0, true));
  const entry = JSON.parse(dec.decode(bytes.subarray(8, 8 + n)))[name];
  const at = 8 + n + entry.data_offsets[0];
  if (entry.dtype === "F32") view.setFloat32(at + 4 * index, value, true);
  else {view.setUint16(
      at + 2 * index,
      Number.isNaN(value) ? 0x7e00 : value > 0 ? 0x7c00 : 0xfc00,
      true,
    );}
  await Deno.writeFile(path, bytes);
}

// ---------------------------------------------------------------------------
// flashlm model files

/**
 * The bytes of a tiny flashlm file with a predictor section and a training report, written
 * to `dir/base.flm` (with its sources in `dir/hf` and `dir/plain.flm`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "../core/flash_file.ts";
 * import { flashBase } from "./fuzz_formats.ts";
 * const dir = await Deno.makeTempDir();
 * const bytes = await flashBase(dir);
 * const file = await FlashModelFile.open(`${dir}/base.flm`);
 * assert.equal(file.header.predictor?.offset !== undefined, true);
 * assert.equal(bytes.length, (await Deno.stat(`${dir}/base.flm`)).size);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function flashBase(dir: string): Promise<Uint8Array> {
  const hf = `${dir}/hf`;
  const config = await buildSyntheticHfModel(hf, {
    dModel: 8,
    dFfn: 16,
    nLayers: 2,
    nHeads: 2,
    maxPositions: 16,
    extraTokens: 0,
    seed: 5,
  });
  const plain = `${dir}/plain.flm`;
  await convertHfToFlash(hf, plain, { dtype: "f32" });
  const rng = new Rng(9);
  const layers = [2, 3].map((rank) => ({
    rank,
    dModel: config.dModel,
    dFfn: config.dFfn,
    a: Float32Array.from({ length: rank * config.dModel }, () => rng.normal()),
    b: Float32Array.from({ length: config.dFfn * rank }, () => rng.normal()),
    c: Float32Array.from({ length: config.dFfn }, () => rng.normal() - 0.5),
    threshold: 0.5,
  }));
  const { meta, bytes } = serializePredictor(new LowRankPredictor(layers));
  const stats = [4, 6, 7, 8];
  const report = {
    text: "fuzz.txt",
    windows: 2,
    windowTokens: 8,
    samples: 16,
    heldOutSamples: 2,
    dFfn: config.dFfn,
    seconds: 0.1,
    layers: layers.map((l, i) => ({
      layer: i,
      rank: l.rank,
      threshold: l.threshold,
      metrics: {
        recall: 0.9,
        predictedOverActual: 1.5,
        falseNegativeRate: 0.1,
        falsePositiveRate: 0.2,
        activeFraction: 0.2,
      },
      sAgg: stats,
      newPerToken: [4, 2, 1, 1],
      oracleSAgg: stats,
      oracleNewPerToken: [3, 2, 1, 1],
    })),
  };
  const model = await FlashModelFile.open(plain);
  const path = `${dir}/base.flm`;
  await rewriteWithPredictor(model, path, { meta, bytes, report });
  return await Deno.readFile(path);
}

/**
 * Byte ranges `[begin, end)` of a flashlm file covered by a checksum (or the preamble's own
 * checks): the preamble, the JSON header of `jsonLength` bytes, the tokenizer, the resident
 * weights, every FFN layer and the predictor.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashModelFile } from "../core/flash_file.ts";
 * import { PREAMBLE_BYTES } from "../core/flash_format.ts";
 * import { checkedRanges, flashBase } from "./fuzz_formats.ts";
 * const dir = await Deno.makeTempDir();
 * const bytes = await flashBase(dir);
 * const jsonLength = new DataView(bytes.buffer).getUint32(12, true);
 * const ranges = checkedRanges(await FlashModelFile.open(`${dir}/base.flm`), jsonLength);
 * assert.deepEqual(ranges[1], [PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength]);
 * assert.equal(ranges.length, 3 + 2 + 1 + 1, "preamble, header, tokenizer, resident, 2 layers, predictor");
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function checkedRanges(file: FlashModelFile, jsonLength: number): [number, number][] {
  const h = file.header;
  const ranges: [number, number][] = [
    [0, 20], // magic, version, header length, header CRC (bytes 20-31 are reserved)
    [PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength],
    [h.tokenizer.offset, h.tokenizer.offset + h.tokenizer.length],
    [h.resident.offset, h.resident.offset + h.resident.length],
    ...h.ffn.layers.map((l): [number, number] => [l.offset, l.offset + l.length]),
  ];
  if (h.predictor) ranges.push([h.predictor.offset, h.predictor.offset + h.predictor.length]);
  return ranges;
}

/**
 * The flashlm file `base` with its JSON header replaced by `json` (padded with spaces into
 * the space the writer left, or moving everything after it when longer); with `fixCrc`, the
 * header checksum is recomputed so that only the header's content is wrong.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FLASH_VERSION, parseFlashHeader, PREAMBLE_BYTES } from "../core/flash_format.ts";
 * import { flashBase, withFlashHeader } from "./fuzz_formats.ts";
 * const dir = await Deno.makeTempDir();
 * const base = await flashBase(dir);
 * const jsonLength = new DataView(base.buffer).getUint32(12, true);
 * const json = new TextDecoder().decode(base.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength));
 * const same = withFlashHeader(base, json.trimEnd(), true);
 * assert.equal(parseFlashHeader(same, same.length, "same.flm").header.version, FLASH_VERSION);
 * assert.throws(() => parseFlashHeader(withFlashHeader(base, "{}", false), base.length, "x.flm"));
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function withFlashHeader(base: Uint8Array, json: string, fixCrc: boolean): Uint8Array {
  const view = new DataView(base.buffer, base.byteOffset);
  const jsonLength = view.getUint32(12, true);
  const text = enc.encode(json);
  let out: Uint8Array;
  if (text.length <= jsonLength) {
    out = base.slice();
    out.fill(0x20, PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength);
    out.set(text, PREAMBLE_BYTES);
  } else {
    // Longer than the space the writer left: everything after it moves.
    out = new Uint8Array(base.length - jsonLength + text.length);
    out.set(base.subarray(0, PREAMBLE_BYTES));
    out.set(text, PREAMBLE_BYTES);
    out.set(base.subarray(PREAMBLE_BYTES + jsonLength), PREAMBLE_BYTES + text.length);
    new DataView(out.buffer).setUint32(12, text.length, true);
  }
  const length = new DataView(out.buffer).getUint32(12, true);
  if (fixCrc) {
    new DataView(out.buffer).setUint32(
      16,
      crc32(out.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + length)),
      true,
    );
  }
  return out;
}
