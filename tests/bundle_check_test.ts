/**
 * Corruption caught where it is read, and a full store that loses nothing:
 *
 * - the per-bundle hash (`io/bundle_hash.ts`): the tuned loop equals the reference, every
 *   change inside one 32-bit word is caught, and the seed catches another neuron's bundle;
 * - a flipped byte in an FFN bundle, or a bundle of NaNs, stops naive and sparse
 *   generation with one io error naming the file, layer and neuron (exit 1 from the CLI);
 *   `--on-corrupt skip` leaves the neuron out and says so in the summary; `verify` names
 *   the layer;
 * - a neuron store far smaller than the predicted sets still computes every predicted
 *   neuron (the oracle at ffn:5% gives the dense logits), warns once, and on the real
 *   model ffn:5% gives ffn:50%'s greedy tokens.
 */

import { strict as assert } from "node:assert";
import { bundleHash, bundleHashNaive, finiteMask } from "../io/bundle_hash.ts";
import { FlashlmError } from "../io/errors.ts";
import { type LoadedModel, loadModel, type LoadOptions } from "../core/engine.ts";
import { FlashModelFile, verifyFfn } from "../core/flash_file.ts";
import { writeFlashModel } from "../core/flash_write.ts";
import { Generation, uncachedWarning } from "../core/generate.ts";
import type { SparseFlashFfn } from "../core/sparse_ffn.ts";
import { parseModelConfig } from "../core/config.ts";
import { loadResidentWeights, residentTensorSpecs } from "../core/weights.ts";
import { FlashNaiveFfn } from "../core/ffn.ts";
import { FlashReader } from "../io/reader.ts";
import { demoModel, realFlashModelWithPredictor, sharedFlashModel } from "./fixtures.ts";
import {
  haveRealModel,
  haveSharedFixture,
  HELDOUT_TEXT,
  logitsPerPosition,
  maxAbsDiff,
  promptIds,
  runCli,
} from "./helpers.ts";

// ---------------------------------------------------------------------------
// The hash

Deno.test("the tuned bundle hash equals the reference for every length, offset and seed", () => {
  let state = 12345;
  const next = (): number => (state = (Math.imul(state, 1103515245) + 12345) >>> 0);
  const words = new Uint32Array(64).map(() => next());
  const bytes = new Uint8Array(words.buffer);
  for (let start = 0; start < 5; start++) {
    for (let count = 0; count <= 40; count++) {
      const seed = next() & 0xfffff;
      const want = bundleHashNaive(bytes.subarray(4 * start, 4 * (start + count)), seed);
      assert.equal(bundleHash(words, start, count, seed), want, `start ${start} count ${count}`);
    }
  }
});

Deno.test("any change inside one 32-bit word of a bundle, and another neuron's seed, change the hash", () => {
  const bytes = new Uint8Array(96).map((_, i) => (i * 73 + 5) & 0xff);
  const words = new Uint32Array(bytes.buffer);
  const h = bundleHash(words, 0, 24, 7);
  for (let at = 0; at < bytes.length; at++) {
    for (const flip of [0x01, 0x80, 0xff, 0x5a]) {
      bytes[at] ^= flip;
      assert.notEqual(bundleHash(words, 0, 24, 7), h, `byte ${at} ^ ${flip}`);
      bytes[at] ^= flip;
    }
  }
  words.copyWithin(0, 1, 2); // two words made equal: a change of one word
  assert.notEqual(bundleHash(words, 0, 24, 7), h);
  for (let seed = 0; seed < 100; seed++) {
    if (seed !== 7) assert.notEqual(bundleHashNaive(bytes, seed), bundleHashNaive(bytes, 7));
  }
});

Deno.test("the same pass finds NaN and infinity in f32 and f16 words, never in finite ones", () => {
  for (const dtype of ["f32", "f16"] as const) {
    const { mask, add, bad } = finiteMask(dtype);
    const flags = new Int32Array(1);
    const check = (w: Uint32Array): boolean => {
      flags[0] = 0;
      bundleHash(w, 0, w.length, 0, flags, mask, add);
      return (flags[0] & bad) !== 0;
    };
    const finite = dtype === "f32"
      ? new Uint32Array(new Float32Array([0, -0, 1, -3.4e38, 1e-45, 65504]).buffer)
      : new Uint32Array([0x3c00bc00, 0x7bff0001, 0xfbff8000, 0x00000000, 0x03ff7bff]);
    assert.equal(check(finite), false, dtype);
    const specials = dtype === "f32"
      ? [0x7f800000, 0xff800000, 0x7fc00000, 0xffffffff]
      : [0x7c000000, 0x0000fc00, 0x7e00_3c00, 0x3c00_ffff];
    for (const special of specials) {
      for (let at = 0; at < finite.length; at++) {
        const w = finite.slice();
        w[at] = special;
        assert.equal(check(w), true, `${dtype} ${special.toString(16)} at ${at}`);
      }
    }
  }
});

// ---------------------------------------------------------------------------
// Corrupt bundles at run time

/** A private copy of a shared model file. */
async function copyOf(path: string): Promise<{ dir: string; flm: string }> {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-corrupt-" });
  const flm = `${dir}/m.flm`;
  await Deno.copyFile(path, flm);
  return { dir, flm };
}

/** Overwrite bytes of `path` at `offset`. */
async function overwrite(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true });
  try {
    await file.seek(offset, Deno.SeekMode.Start);
    await file.write(bytes);
  } finally {
    file.close();
  }
}

/** Generate `n` greedy tokens; the ids. */
async function greedy(model: LoadedModel, prompt: string | number[], n: number): Promise<number[]> {
  const gen = new Generation(model, prompt, { maxTokens: n, stopAtEos: false });
  const ids: number[] = [];
  for await (const t of gen) if (t.id >= 0) ids.push(t.id);
  return ids;
}

/** Expect `run` to fail with one io FlashlmError naming `flm`, layer and neuron. */
async function rejectsNaming(
  run: () => Promise<unknown>,
  flm: string,
  layer: number,
  neuron: number,
  what: RegExp,
): Promise<void> {
  await assert.rejects(run, (e: unknown) => {
    assert.ok(e instanceof FlashlmError && e.kind === "io", String(e));
    assert.ok(e.message.startsWith(`${flm}: FFN layer ${layer} neuron ${neuron} `), e.message);
    assert.match(e.message, what);
    assert.ok(!e.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("a flipped byte in an FFN bundle stops naive and sparse generation with an io error naming file, layer and neuron", async () => {
  const { dir, flm } = await copyOf(await demoModel());
  try {
    // A neuron sparse mode reads for this prompt: the first row layer 1's store filled.
    const sparseOptions: LoadOptions = {
      mode: "sparse",
      memory: { kind: "ffn-percent", percent: 50 },
    };
    const clean = await loadModel(flm, sparseOptions);
    const cleanIds = await greedy(clean, "Once upon a time", 4);
    const neuron = (clean.transformer.ffn as SparseFlashFfn).stores[1].pointer[0];
    clean.close();
    const file = await FlashModelFile.open(flm);
    await overwrite(flm, file.bundleOffset(1, neuron) + 5, new Uint8Array([0x55]));
    const flipped = /fails its checksum .*--on-corrupt skip/;
    for (const mode of ["naive", "sparse"] as const) {
      const model = await loadModel(flm, mode === "naive" ? { mode } : sparseOptions);
      await rejectsNaming(() => greedy(model, "Once upon a time", 4), flm, 1, neuron, flipped);
      model.close();
    }
    await rejectsNaming(() => loadModel(flm, { mode: "dense" }), flm, 1, neuron, flipped);
    assert.deepEqual(await verifyFfn(file), [1], "verify names the layer");
    // Skipped, the neuron is counted and never computed; generation runs on.
    const skip = await loadModel(flm, { ...sparseOptions, onCorrupt: "skip" });
    const ids = await greedy(skip, "Once upon a time", 4);
    assert.equal(ids.length, cleanIds.length);
    const ffn = skip.transformer.ffn as SparseFlashFfn;
    assert.ok(ffn.stats.neuronsCorrupt > 0);
    assert.ok(!ffn.stores[1].has(neuron), "a corrupt neuron does not stay in the store");
    skip.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bundle overwritten with NaNs fails its checksum; NaN weights written with a valid checksum fail as NaN", async () => {
  const { dir, flm } = await copyOf(await sharedFlashModel({}, "f16"));
  try {
    const file = await FlashModelFile.open(flm);
    await overwrite(flm, file.bundleOffset(0, 3), new Uint8Array(file.bundleBytes).fill(0xff));
    const naive = await loadModel(flm, { mode: "naive" });
    await rejectsNaming(() => greedy(naive, [2, 5, 6], 2), flm, 0, 3, /fails its checksum/);
    naive.close();

    // A file whose bundle 9 of layer 1 holds a NaN (its checksum matches).
    const config = parseModelConfig(
      JSON.stringify({
        model_type: "opt",
        vocab_size: 8,
        hidden_size: 4,
        ffn_dim: 16,
        num_hidden_layers: 2,
        num_attention_heads: 1,
        max_position_embeddings: 8,
        activation_function: "relu",
      }),
      "config.json",
    );
    const names = new Set(residentTensorSpecs(config).filter((s) => s.required).map((s) => s.name));
    const nan = `${dir}/nan.flm`;
    await writeFlashModel(nan, {
      config,
      dtype: "f32",
      metadata: {},
      tokenizerFiles: new Map(),
      resident: {
        description: "ones",
        has: (name) => names.has(name),
        readF32: (_n, shape) =>
          Promise.resolve(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(0.5)),
      },
      ffnBundles: (layer) => {
        const b = new Float32Array(16 * 2 * 4).fill(0.25); // (dFfn, 2 * dModel)
        if (layer === 1) b[9 * 8 + 6] = NaN; // neuron 9's fc2 column
        return Promise.resolve(b);
      },
    });
    const model = await FlashModelFile.open(nan);
    assert.deepEqual(await verifyFfn(model), [1], "verify finds the NaN the layer's CRC covers");
    const resident = await loadResidentWeights(config, model);
    const ffn = new FlashNaiveFfn(model, resident, await FlashReader.open(nan));
    const x = new Float32Array(4).fill(1);
    await ffn.forward(0, x, new Float32Array(4));
    await rejectsNaming(
      () => ffn.forward(1, x, new Float32Array(4)),
      nan,
      1,
      9,
      /holds a NaN or infinite weight/,
    );
    ffn.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the CLI: a corrupt bundle is exit 1 with one line; --on-corrupt skip generates and counts it in the summary", async () => {
  const { dir, flm } = await copyOf(await sharedFlashModel({}, "f16"));
  try {
    const file = await FlashModelFile.open(flm);
    await overwrite(flm, file.bundleOffset(1, 0) + 2, new Uint8Array([0x12, 0x34]));
    const args = ["generate", flm, "--mode", "naive", "--max-tokens", "3", "--prompt", "a b"];
    const failed = await runCli(args);
    assert.equal(failed.code, 1, failed.stderr);
    const lines = failed.stderr.trim().split("\n");
    assert.match(
      lines[lines.length - 1],
      new RegExp(`^flashlm: error: ${flm}: FFN layer 1 neuron 0 fails its checksum`),
    );
    const skipped = await runCli([...args, "--on-corrupt", "skip"]);
    assert.equal(skipped.code, 0, skipped.stderr);
    assert.match(skipped.stderr, / corrupt bundle reads skipped \(--on-corrupt skip\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// A store too small for the predicted sets

Deno.test("a neuron store far smaller than the predicted sets loses nothing: the oracle at ffn:5% gives the dense logits, and one warning says so", async () => {
  const flm = await sharedFlashModel({}, "f16");
  const ids = promptIds(24, 256);
  const dense = await loadModel(flm, { mode: "dense" });
  const want = await logitsPerPosition(dense, ids);
  dense.close();
  const small = await loadModel(flm, {
    mode: "sparse",
    predictor: "oracle",
    memory: { kind: "ffn-percent", percent: 5 },
  });
  const got = await logitsPerPosition(small, ids);
  const ffn = small.transformer.ffn as SparseFlashFfn;
  for (let pos = 0; pos < ids.length; pos++) {
    assert.ok(maxAbsDiff(got[pos], want[pos]) <= 1e-4, `position ${pos}`);
  }
  assert.ok(ffn.stats.neuronsUncached > 0, "the overflow went through the scratch");
  assert.match(uncachedWarning(ffn.stats, ids.length)!, /a larger --memory keeps them/);
  small.close();
});

Deno.test({
  name: "on the real model, --memory ffn:5% gives the same greedy tokens as ffn:50%",
  ignore: !haveRealModel() || !haveSharedFixture(HELDOUT_TEXT),
  fn: async () => {
    const flm = await realFlashModelWithPredictor();
    const prompt = "The history of the city began in the";
    const tokens: number[][] = [];
    for (const percent of [50, 5]) {
      const model = await loadModel(flm, { memory: { kind: "ffn-percent", percent } });
      tokens.push(await greedy(model, prompt, 24));
      model.close();
    }
    assert.deepEqual(tokens[1], tokens[0]);
  },
});
