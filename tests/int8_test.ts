/**
 * The int8 storage dtype of the flash file: what `convert --dtype int8` and
 * `make-model --dtype int8` write, what `FlashModelFile` reads back (at storage precision
 * and as f32), the split layout, the refusals, and the real model converted to int8.
 */

import { strict as assert } from "node:assert";
import { quantizeRowsI8 } from "../kernels/matvec_i8.ts";
import { FlashlmError } from "../io/errors.ts";
import { parseModelConfig } from "../core/config.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel, readAllFfn } from "../core/engine.ts";
import { FlashModelFile, layerAsBundles, verifyFfn } from "../core/flash_file.ts";
import {
  decodeBundles,
  FLASH_VERSION,
  parseFlashHeader,
  PREAMBLE_BYTES,
} from "../core/flash_format.ts";
import { i8ScalesOffset } from "../core/flash_values.ts";
import { rewriteWithLayout, writeFlashModel } from "../core/flash_write.ts";
import { Generation } from "../core/generate.ts";
import { agreement, perplexity } from "../core/eval.ts";
import { corpusWindows, readCorpus } from "../core/corpus.ts";
import { openHfModel } from "../core/hf_model.ts";
import { ffnTensorSpecs, residentTensorSpecs } from "../core/weights.ts";
import { makeSyntheticModel } from "../tools/make_model.ts";
import { withFlashHeader } from "./fuzz_formats.ts";
import { sharedHfModel } from "./fixtures.ts";
import { exists, haveRealModel, HELDOUT_TEXT, REAL_MODEL_DIR } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Helpers

/** `rows` rows of `cols` f32 values quantized as the writer does: (q, scales). */
function quantized(values: Float32Array, rows: number, cols: number): [Int8Array, Float32Array] {
  const q = new Int8Array(rows * cols); // (rows, cols)
  const scales = new Float32Array(rows); // (rows)
  assert.equal(quantizeRowsI8(values, 0, rows, cols, q, 0, scales, 0), -1, "finite values");
  return [q, scales];
}

/** The tiny shared HF model converted to int8 in a fresh temp dir: [dir, hf dir, model path]. */
async function tinyInt8(): Promise<[string, string, string]> {
  const hf = await sharedHfModel();
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  await convertHfToFlash(hf, `${dir}/int8.flm`, { dtype: "int8" });
  return [dir, hf, `${dir}/int8.flm`];
}

/** One FFN layer's stored bytes, as they are in the file. */
async function layerBytes(model: FlashModelFile, layer: number): Promise<Uint8Array> {
  const entry = model.header.ffn.layers[layer];
  return (await Deno.readFile(model.path)).slice(entry.offset, entry.offset + entry.length);
}

/** The bytes of the file at `path`'s resident section. */
async function residentSection(model: FlashModelFile): Promise<Uint8Array> {
  const r = model.header.resident;
  return (await Deno.readFile(model.path)).slice(r.offset, r.offset + r.length);
}

/** The JSON header of a flashlm file's bytes, parsed. */
function headerJson(bytes: Uint8Array): Record<string, unknown> {
  const jsonLength = new DataView(bytes.buffer, bytes.byteOffset).getUint32(12, true);
  const text = new TextDecoder().decode(
    bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength),
  );
  return JSON.parse(text);
}

// ---------------------------------------------------------------------------
// Round trips

Deno.test("an int8 file holds each resident matrix as the exact quantization of its source, and readF32 returns its dequantization", async () => {
  const [dir, hf, path] = await tinyInt8();
  const source = (await openHfModel(hf)).source;
  const model = await FlashModelFile.open(path);
  assert.equal(model.dtype, "int8");
  assert.equal(model.header.version, FLASH_VERSION);
  let matrices = 0;
  for (const spec of residentTensorSpecs(model.config)) {
    if (!model.has(spec.name)) continue;
    const original = await source.readF32(spec.name, spec.shape);
    const stored = await model.readF32(spec.name, spec.shape);
    const entry = model.header.resident.tensors.find((t) => t.name === spec.name)!;
    if (spec.shape.length === 1) {
      assert.equal(entry.dtype, "f32", `${spec.name} stays f32`);
      assert.deepEqual(stored, original, `${spec.name} as it was`);
      continue;
    }
    const [rows, cols] = spec.shape;
    const [q, scales] = quantized(original, rows, cols);
    const m = await model.readMatrix(spec.name, spec.shape);
    assert.ok(m.dtype === "int8", `${spec.name} is int8`);
    assert.equal(entry.dtype, "int8");
    assert.equal(entry.length, i8ScalesOffset(rows, cols) + 4 * rows);
    assert.deepEqual(m.data, q, `${spec.name}: the quantized values`);
    assert.deepEqual(m.scales, scales, `${spec.name}: the scales`);
    const dequantized = Float32Array.from(q, (v, i) => scales[Math.floor(i / cols)] * v);
    assert.deepEqual(stored, dequantized, `${spec.name}: readF32 dequantizes`);
    matrices++;
  }
  assert.equal(matrices, 2 + 4 * model.config.nLayers, "embeddings and attention projections");
  assert.deepEqual(await verifyFfn(model), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an f16 file's readMatrix hands out the stored 16-bit words, and an f32 file's its values", async () => {
  const hf = await sharedHfModel();
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  for (const dtype of ["f16", "f32"] as const) {
    await convertHfToFlash(hf, `${dir}/${dtype}.flm`, { dtype });
    const model = await FlashModelFile.open(`${dir}/${dtype}.flm`);
    const name = "layers.1.self_attn.out_proj.weight";
    const shape = [model.config.dModel, model.config.dModel];
    const m = await model.readMatrix(name, shape);
    assert.equal(m.dtype, dtype);
    const t = model.header.resident.tensors.find((t) => t.name === name)!;
    const bytes = (await residentSection(model)).slice(t.offset, t.offset + t.length);
    assert.deepEqual(new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength), bytes);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("int8 FFN bundles decode to the dequantized fc1 rows and fc2 columns, within half a quantization step of the source", async () => {
  const [dir, hf, path] = await tinyInt8();
  const source = (await openHfModel(hf)).source;
  const model = await FlashModelFile.open(path);
  const { dModel: d, dFfn } = model.config;
  assert.equal(model.bundleBytes, 2 * d + 8);
  const dense = await readAllFfn(model); // through decodeValues, as the engine decodes
  for (let l = 0; l < model.config.nLayers; l++) {
    const [fc1Spec, fc2Spec] = ffnTensorSpecs(model.config, l);
    const fc1 = await source.readF32(fc1Spec.name, fc1Spec.shape); // (dFfn, d)
    const fc2 = await source.readF32(fc2Spec.name, fc2Spec.shape); // (d, dFfn)
    const bundles = decodeBundles(await layerBytes(model, l), "int8", d); // (dFfn, 2d)
    const fc2t = new Float32Array(dFfn * d); // (dFfn, d): fc2 columns as rows
    for (let i = 0; i < dFfn; i++) for (let j = 0; j < d; j++) fc2t[i * d + j] = fc2[j * dFfn + i];
    const [q1, s1] = quantized(fc1, dFfn, d);
    const [q2, s2] = quantized(fc2t, dFfn, d);
    for (let i = 0; i < dFfn; i++) {
      for (let j = 0; j < d; j++) {
        const up = bundles[i * 2 * d + j], down = bundles[i * 2 * d + d + j];
        assert.equal(up, Math.fround(s1[i] * q1[i * d + j]), `layer ${l} fc1[${i}, ${j}]`);
        assert.equal(down, Math.fround(s2[i] * q2[i * d + j]), `layer ${l} fc2[${j}, ${i}]`);
        assert.ok(Math.abs(up - fc1[i * d + j]) <= s1[i] / 2 * (1 + 1e-6), `fc1[${i}, ${j}]`);
        assert.ok(Math.abs(down - fc2t[i * d + j]) <= s2[i] / 2 * (1 + 1e-6), `fc2[${j}, ${i}]`);
        assert.equal(dense[l].fc1[i * d + j], up, "readAllFfn decodes the same values");
        assert.equal(dense[l].fc2[j * dFfn + i], down);
      }
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an int8 file rewritten in the split layout and back is byte for byte the same", async () => {
  const [dir, , path] = await tinyInt8();
  const model = await FlashModelFile.open(path);
  const { dModel: d, dFfn } = model.config;
  await rewriteWithLayout(model, `${dir}/split.flm`, "split");
  const split = await FlashModelFile.open(`${dir}/split.flm`);
  assert.equal(split.layout, "split");
  assert.deepEqual(await verifyFfn(split), []);
  await rewriteWithLayout(split, `${dir}/back.flm`, "row-column-bundles");
  const back = await FlashModelFile.open(`${dir}/back.flm`);
  assert.deepEqual(await residentSection(split), await residentSection(model));
  assert.deepEqual(await residentSection(back), await residentSection(model));
  for (let l = 0; l < model.config.nLayers; l++) {
    const bundled = await layerBytes(model, l);
    const raw = await layerBytes(split, l);
    // Split: all fc1 halves [d int8 | scale], then all fc2 halves.
    assert.deepEqual(raw.subarray(0, d + 4), bundled.subarray(0, d + 4), "fc1 half of neuron 0");
    assert.deepEqual(raw.subarray(d + 4, 2 * (d + 4)), bundled.subarray(2 * d + 8, 3 * d + 12));
    assert.deepEqual(
      raw.subarray(dFfn * (d + 4), (dFfn + 1) * (d + 4)),
      bundled.subarray(d + 4, 2 * d + 8),
      "fc2 half of neuron 0",
    );
    assert.deepEqual(layerAsBundles(split, raw, new Uint8Array(raw.length)), bundled);
    assert.deepEqual(await layerBytes(back, l), bundled);
    assert.equal(back.header.ffn.layers[l].crc32, model.header.ffn.layers[l].crc32);
  }
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// Refusals

const tinyConfig = (dModel: number) =>
  parseModelConfig(
    JSON.stringify({
      model_type: "opt",
      vocab_size: 8,
      hidden_size: dModel,
      ffn_dim: 8,
      num_hidden_layers: 2,
      num_attention_heads: 1,
      max_position_embeddings: 4,
      activation_function: "relu",
    }),
    "config.json",
  );

/** A source of the tiny config's resident tensors: ones, with `poison` at one element. */
function onesSource(dModel: number, poison?: { name: string; index: number; value: number }) {
  const names = new Set(
    residentTensorSpecs(tinyConfig(dModel)).filter((s) => s.required).map((s) => s.name),
  );
  return {
    description: "poisoned-source",
    has: (name: string) => names.has(name),
    readF32: (name: string, shape: number[]) => {
      const out = new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(1);
      if (poison?.name === name) out[poison.index] = poison.value;
      return Promise.resolve(out);
    },
  };
}

Deno.test("a NaN or infinite weight is refused by the int8 writer, naming the tensor and the element, and nothing is written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  const config = tinyConfig(4);
  const write = (
    resident: ReturnType<typeof onesSource>,
    ffnBundles: (l: number) => Promise<Float32Array>,
  ) =>
    writeFlashModel(`${dir}/out.flm`, {
      config,
      dtype: "int8",
      metadata: {},
      tokenizerFiles: new Map(),
      resident,
      ffnBundles,
    });
  const ones = () => Promise.resolve(new Float32Array(8 * 2 * 4).fill(1)); // (dFfn, 2d)
  const cases: [string, () => Promise<void>, RegExp][] = [
    [
      "NaN in an attention projection",
      () =>
        write(
          onesSource(4, { name: "layers.0.self_attn.q_proj.weight", index: 5, value: NaN }),
          ones,
        ),
      /^poisoned-source: tensor layers\.0\.self_attn\.q_proj\.weight holds NaN at element 5;/,
    ],
    [
      "-Infinity in the token embedding",
      () => write(onesSource(4, { name: "embed_tokens.weight", index: 0, value: -Infinity }), ones),
      /tensor embed_tokens\.weight holds -Infinity at element 0;/,
    ],
    [
      "Infinity in fc2 column 3, row 2 of layer 1",
      () =>
        write(onesSource(4), (l) => {
          const bundles = new Float32Array(8 * 2 * 4).fill(1);
          if (l === 1) bundles[3 * 8 + 4 + 2] = Infinity; // bundle 3, down half, value 2
          return Promise.resolve(bundles);
        }),
      /tensor layers\.1\.fc2\.weight holds Infinity at element 19;/, // row 2 * dFfn 8 + column 3
    ],
    [
      "NaN in fc1 row 6 of layer 0",
      () =>
        write(onesSource(4), (l) => {
          const bundles = new Float32Array(8 * 2 * 4).fill(1);
          if (l === 0) bundles[6 * 8 + 1] = NaN;
          return Promise.resolve(bundles);
        }),
      /tensor layers\.0\.fc1\.weight holds NaN at element 25;/, // row 6 * d 4 + column 1
    ],
  ];
  for (const [what, run, pattern] of cases) {
    await assert.rejects(run, (e: unknown) => {
      assert.ok(e instanceof FlashlmError && e.kind === "format", `${what}: ${e}`);
      assert.match(e.message, pattern, what);
      assert.ok(!e.message.includes("\n"), what);
      return true;
    }, what);
    assert.ok(!exists(`${dir}/out.flm`), `${what}: nothing written`);
  }
  assert.deepEqual([...Deno.readDirSync(dir)], [], "no temp file left behind");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("int8 storage of a model whose hidden size is not a multiple of 4 is a config error, and nothing is written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  await assert.rejects(
    writeFlashModel(`${dir}/out.flm`, {
      config: tinyConfig(6),
      dtype: "int8",
      metadata: {},
      tokenizerFiles: new Map(),
      resident: onesSource(6),
      ffnBundles: () => Promise.resolve(new Float32Array(8 * 2 * 6)),
    }),
    (e: unknown) => {
      assert.ok(e instanceof FlashlmError && e.kind === "config", String(e));
      assert.equal(
        e.message,
        "poisoned-source: int8 storage needs a hidden size divisible by 4, the model's is 6",
      );
      return true;
    },
  );
  assert.ok(!exists(`${dir}/out.flm`));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an int8 header whose tensor length, tensor dtype or bundle size disagrees with the shapes is a format error", async () => {
  const [dir, , path] = await tinyInt8();
  const base = await Deno.readFile(path);
  const d = (await FlashModelFile.open(path)).config.dModel;
  type Header = {
    dtype: string;
    resident: { tensors: { name: string; dtype: string; length: number }[] };
    ffn: { bundleBytes: number };
  };
  const cases: [string, (h: Header) => void, RegExp][] = [
    [
      "an int8 matrix without its scales",
      (h) => {
        const t = h.resident.tensors.find((t) => t.name === "layers.0.self_attn.k_proj.weight")!;
        t.length = d * d;
      },
      /resident tensor layers\.0\.self_attn\.k_proj\.weight has length \d+, expected \d+/,
    ],
    [
      "a matrix said to be f16 in an int8 file",
      (h) => {
        h.resident.tensors.find((t) => t.name === "embed_tokens.weight")!.dtype = "f16";
      },
      /resident tensor embed_tokens\.weight has dtype "f16", expected int8 in a int8 file/,
    ],
    [
      "a bias said to be int8",
      (h) => {
        h.resident.tensors.find((t) => t.name === "layers.1.fc1.bias")!.dtype = "int8";
      },
      /resident tensor layers\.1\.fc1\.bias has dtype "int8", expected f32/,
    ],
    [
      "f16-sized bundles",
      (h) => {
        h.ffn.bundleBytes = 4 * d;
      },
      new RegExp(
        `FFN bundle size ${4 * d} does not match 2 x \\(${d} int8 values \\+ an f32 scale\\)`,
      ),
    ],
    [
      "an unknown dtype",
      (h) => {
        h.dtype = "int4";
      },
      /unknown storage dtype "int4"/,
    ],
  ];
  for (const [what, change, pattern] of cases) {
    const header = headerJson(base) as unknown as Header;
    change(header);
    const bytes = withFlashHeader(base, JSON.stringify(header), true);
    assert.throws(() => parseFlashHeader(bytes, bytes.length, "bad.flm"), (e: unknown) => {
      assert.ok(e instanceof FlashlmError && e.kind === "format", `${what}: ${e}`);
      assert.ok(e.message.startsWith("bad.flm: "), e.message);
      assert.match(e.message, pattern, what);
      return true;
    }, what);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a file of an older format version (1 to 3, no bundle checksums) is refused with one line asking to convert again; a newer one is refused too", async () => {
  const hf = await sharedHfModel();
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  await convertHfToFlash(hf, `${dir}/f16.flm`, { dtype: "f16" });
  const base = await Deno.readFile(`${dir}/f16.flm`);
  const asVersion = (version: number): Uint8Array => {
    const header = headerJson(base) as { version: number; bundleChecksums?: unknown };
    header.version = version;
    delete header.bundleChecksums; // what a version 1 to 3 writer wrote
    const bytes = withFlashHeader(base, JSON.stringify(header), true);
    new DataView(bytes.buffer).setUint32(8, version, true); // the preamble's version
    return bytes;
  };
  for (const version of [1, 2, 3]) {
    await Deno.writeFile(`${dir}/old.flm`, asVersion(version));
    await assert.rejects(FlashModelFile.open(`${dir}/old.flm`), (e: unknown) => {
      assert.ok(e instanceof FlashlmError, String(e));
      assert.equal(
        e.message,
        `${dir}/old.flm: file format version ${version} was written by an older flashlm (this one reads version ${FLASH_VERSION}, which checksums every FFN bundle): convert the model again with \`flashlm convert\``,
      );
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
  const relabelled = base.slice(); // a current file whose preamble says version 99
  new DataView(relabelled.buffer).setUint32(8, 99, true);
  assert.throws(
    () => parseFlashHeader(relabelled, relabelled.length, "new.flm"),
    {
      message:
        `new.flm: file format version 99 is not supported (this flashlm reads version ${FLASH_VERSION})`,
    },
  );
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// make-model

Deno.test("make-model --dtype int8 writes a synthetic int8 model that opens, verifies and weighs about half its f16 version", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-" });
  const int8 = await makeSyntheticModel(`${dir}/int8.flm`, { shape: "tiny", dtype: "int8" });
  const f16 = await makeSyntheticModel(`${dir}/f16.flm`, { shape: "tiny", dtype: "f16" });
  const { dModel: d, dFfn, nLayers } = int8.config;
  assert.equal(int8.ffnBytes, nLayers * dFfn * (2 * d + 8));
  assert.equal(f16.ffnBytes, nLayers * dFfn * 4 * d);
  const model = await FlashModelFile.open(int8.path);
  assert.equal(model.dtype, "int8");
  assert.deepEqual(await verifyFfn(model), []);
  assert.ok(model.header.predictor !== undefined, "the analytic predictor is stored");
  // The int8 FFN decodes to the f16 one within a quantization step.
  const fromF16 = await FlashModelFile.open(f16.path);
  const a = decodeBundles(await layerBytes(model, 1), "int8", d);
  const b = decodeBundles(await layerBytes(fromF16, 1), "f16", d);
  let worst = 0, largest = 0;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
    largest = Math.max(largest, Math.abs(b[i]));
  }
  assert.ok(worst <= largest / 127, `int8 vs f16: ${worst} (largest weight ${largest})`);
  // Weights: FFN (2d + 8) / 4d of f16; resident section about half (biases and norms stay f32).
  const resident = model.header.resident.length / fromF16.header.resident.length;
  const ffn = int8.ffnBytes / f16.ffnBytes;
  console.log(
    `tiny synthetic model: file int8 ${int8.fileBytes} bytes, f16 ${f16.fileBytes}; ` +
      `int8 / f16: FFN ${ffn.toFixed(3)}, resident ${resident.toFixed(3)}`,
  );
  assert.ok(ffn < 0.55 && resident < 0.6, `int8 / f16: FFN ${ffn}, resident ${resident}`);
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// The real model

Deno.test({
  name:
    "the real OPT checkpoint converts to int8 at about half its f16 size, opens, verifies and generates in dense mode",
  ignore: !haveRealModel(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-int8-real-" });
    await convertHfToFlash(REAL_MODEL_DIR, `${dir}/int8.flm`, { dtype: "int8" });
    await convertHfToFlash(REAL_MODEL_DIR, `${dir}/f16.flm`, { dtype: "f16" });
    const model = await FlashModelFile.open(`${dir}/int8.flm`);
    assert.equal(model.dtype, "int8");
    assert.deepEqual(await verifyFfn(model), []);
    const int8Bytes = (await Deno.stat(`${dir}/int8.flm`)).size;
    const f16Bytes = (await Deno.stat(`${dir}/f16.flm`)).size;
    const ratio = int8Bytes / f16Bytes;
    console.log(
      `real model: int8 ${(int8Bytes / 1e6).toFixed(2)} MB, f16 ${
        (f16Bytes / 1e6).toFixed(2)
      } MB ` +
        `(int8 / f16 = ${ratio.toFixed(3)})`,
    );
    assert.ok(ratio > 0.45 && ratio < 0.55, `int8 / f16 = ${ratio}`);

    // Greedy tokens of reference.json's prompts, from the int8 and the f16 conversions.
    const reference = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/reference.json`));
    const dense8 = await loadModel(`${dir}/int8.flm`, { mode: "dense" });
    const dense16 = await loadModel(`${dir}/f16.flm`, { mode: "dense" });
    try {
      let same8 = 0, same16 = 0, all = 0;
      for (const p of reference.prompts as { ids: number[]; greedy_16: number[] }[]) {
        const run = async (m: typeof dense8): Promise<number[]> => {
          const out: number[] = [];
          const gen = new Generation(m, p.ids, { maxTokens: 16, stopAtEos: false });
          for await (const t of gen) if (t.id >= 0) out.push(t.id);
          return out;
        };
        const [t8, t16] = [await run(dense8), await run(dense16)];
        const match = (t: number[]) => t.filter((id, i) => id === p.greedy_16[i]).length;
        console.log(
          `  ${JSON.stringify(dense8.tokenizer.decode(t8))}: int8 ${match(t8)}/16, ` +
            `f16 ${match(t16)}/16 of the reference's greedy tokens`,
        );
        assert.equal(t8[0], p.greedy_16[0], "the first greedy token is the reference's");
        same8 += match(t8);
        same16 += match(t16);
        all += 16;
      }
      console.log(`  in all: int8 ${same8}/${all}, f16 ${same16}/${all}`);
      assert.equal(same16, all, "the f16 conversion is the reference");

      // Held-out text: int8's perplexity within 1.5% of f16's, the same greedy choice at 97%.
      if (exists(HELDOUT_TEXT)) {
        const ids = await readCorpus(HELDOUT_TEXT, dense16.tokenizer);
        const windows = corpusWindows(ids, 128, 4, 2, "end");
        const p16 = await perplexity(dense16, windows);
        const p8 = await perplexity(dense8, windows);
        const change = p8.perplexity / p16.perplexity - 1;
        const same = agreement(p16.argmax, p8.argmax);
        console.log(
          `  held-out perplexity: f16 ${p16.perplexity.toFixed(3)}, int8 ${
            p8.perplexity.toFixed(3)
          } (${(100 * change).toFixed(2)}%), top-1 agreement ${(100 * same).toFixed(2)}%`,
        );
        assert.ok(Math.abs(change) <= 0.015, `int8 perplexity ${(100 * change).toFixed(2)}% off`);
        assert.ok(same >= 0.97, `top-1 agreement ${(100 * same).toFixed(2)}%`);
      }
    } finally {
      dense8.close();
      dense16.close();
    }
    await Deno.remove(dir, { recursive: true });
  },
});
