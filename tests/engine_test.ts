import { strict as assert } from "node:assert";
import { loadModel } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { Checkpoint } from "../io/safetensors_read.ts";
import { type TensorToWrite, writeSafetensors } from "../io/safetensors_write.ts";
import { referenceLogits } from "./reference_forward.ts";
import { logitsPerPosition, maxAbsDiff, promptIds, TINY, tinyHfModel } from "./helpers.ts";
import type { SyntheticModelOptions } from "../tools/demo_model.ts";
import { sharedFlashModel, sharedHfModel } from "./fixtures.ts";

async function denseVsNaive(
  options: SyntheticModelOptions,
  dtype: "f16" | "f32",
): Promise<{ dense: Float32Array[]; naive: Float32Array[]; flashDense: Float32Array[] }> {
  const dir = await sharedHfModel(options);
  const flm = await sharedFlashModel(options, dtype);
  const ids = promptIds(32, 400);
  const dense = await loadModel(dir, { mode: "dense" });
  const naive = await loadModel(flm, { mode: "naive", readerDepth: 8 });
  const flashDense = await loadModel(flm, { mode: "dense" });
  try {
    return {
      dense: await logitsPerPosition(dense, ids),
      naive: await logitsPerPosition(naive, ids),
      flashDense: await logitsPerPosition(flashDense, ids),
    };
  } finally {
    dense.close();
    naive.close();
    flashDense.close();
  }
}

Deno.test("flash-naive logits equal dense logits at every position of a 32-token prompt (f32 storage)", async () => {
  const { dense, naive, flashDense } = await denseVsNaive({ dtype: "F32" }, "f32");
  assert.equal(naive.length, 32);
  for (let pos = 0; pos < 32; pos++) {
    assert.ok(
      maxAbsDiff(dense[pos], naive[pos]) <= 1e-5,
      `position ${pos}: ${maxAbsDiff(dense[pos], naive[pos])}`,
    );
    assert.ok(maxAbsDiff(dense[pos], flashDense[pos]) <= 1e-5, `position ${pos} (dense from .flm)`);
  }
});

Deno.test("an f16 checkpoint stored as f16 gives the same logits in flash-naive and dense modes", async () => {
  const { dense, naive } = await denseVsNaive({ dtype: "F16" }, "f16");
  for (let pos = 0; pos < 32; pos++) {
    assert.ok(
      maxAbsDiff(dense[pos], naive[pos]) <= 1e-5,
      `position ${pos}: ${maxAbsDiff(dense[pos], naive[pos])}`,
    );
  }
});

Deno.test("an f32 checkpoint stored as f16 stays close to dense (f16 rounding only)", async () => {
  const { dense, naive } = await denseVsNaive({ dtype: "F32" }, "f16");
  for (let pos = 0; pos < 32; pos++) {
    const scale = Math.max(...dense[pos].map(Math.abs));
    assert.ok(maxAbsDiff(dense[pos], naive[pos]) <= 1e-2 * scale, `position ${pos}`);
  }
});

const VARIANTS: [string, SyntheticModelOptions][] = [
  ["pre-LayerNorm OPT with tied lm_head", {}],
  ["post-LayerNorm OPT (as opt-350m)", { layerNormBefore: false }],
  ["OPT with project_in/project_out (word_embed_proj_dim != hidden_size)", {
    wordEmbedProjDim: 16,
  }],
  ["OPT with an explicit lm_head.weight", { writeLmHead: true }],
  ["OPT whose tensors have the decoder. prefix", { prefix: "decoder." }],
  ["OPT whose tensors have no prefix", { prefix: "" }],
];

for (const [what, options] of VARIANTS) {
  Deno.test(`KV-cached decoding equals a full recompute by an independent reference: ${what}`, async () => {
    const dir = await sharedHfModel({ ...options, nLayers: 2 });
    const ids = promptIds(12, 400);
    const model = await loadModel(dir, { mode: "dense" });
    const cached = await logitsPerPosition(model, ids);
    model.close();
    const full = await referenceLogits(dir, ids, { kv: "f16" }); // as the engine's KV cache
    const V = cached[0].length;
    for (let pos = 0; pos < ids.length; pos++) {
      const diff = maxAbsDiff(cached[pos], full.subarray(pos * V, (pos + 1) * V));
      assert.ok(diff <= 1e-4, `position ${pos}: ${diff}`);
    }
  });
}

Deno.test("a sharded checkpoint (model.safetensors.index.json) loads like the single file", async () => {
  const dir = await tinyHfModel();
  const ids = promptIds(8, 400);
  const single = await loadModel(dir, { mode: "dense" });
  const expected = await logitsPerPosition(single, ids);
  single.close();

  const ckpt = await Checkpoint.open(dir);
  const names = ckpt.names();
  const shards: TensorToWrite[][] = [[], []];
  const weightMap: Record<string, string> = {};
  for (const [i, name] of names.entries()) {
    const info = ckpt.info(name);
    shards[i % 2].push({ name, dtype: "F32", shape: info.shape, data: await ckpt.readF32(name) });
    weightMap[name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
  }
  await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, shards[0]);
  await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, shards[1]);
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: {}, weight_map: weightMap }),
  );
  await Deno.remove(`${dir}/model.safetensors`);

  const sharded = await loadModel(dir, { mode: "dense" });
  const got = await logitsPerPosition(sharded, ids);
  sharded.close();
  for (let pos = 0; pos < ids.length; pos++) assert.equal(maxAbsDiff(expected[pos], got[pos]), 0);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("greedy generation gives the same tokens in dense and flash-naive modes", async () => {
  const dir = await sharedHfModel();
  const flm = await sharedFlashModel({}, "f32");
  const runs: number[][] = [];
  for (const [path, mode] of [[dir, "dense"], [flm, "naive"]] as const) {
    const model = await loadModel(path, { mode });
    const gen = new Generation(model, "Once upon a time", { maxTokens: 20, stopAtEos: false });
    const ids: number[] = [];
    for await (const t of gen) if (t.id >= 0) ids.push(t.id);
    assert.equal(gen.stats.generatedTokens, 20);
    if (mode === "naive") {
      // Naive reads every FFN byte of every layer for every forward pass.
      const perPass = TINY.nLayers! * TINY.dFfn! * 2 * TINY.dModel! * 4;
      assert.equal(gen.stats.ffn.bytesRead, perPass * gen.stats.forwardPasses);
    } else {
      assert.equal(gen.stats.ffn.bytesRead, 0);
    }
    runs.push(ids);
    model.close();
  }
  assert.deepEqual(runs[0], runs[1]);
});

Deno.test("seeded sampling is reproducible and a prompt longer than the context is refused", async () => {
  const dir = await sharedHfModel();
  const model = await loadModel(dir, { mode: "dense", contextLength: 16 });
  const sample = async (): Promise<number[]> => {
    const ids: number[] = [];
    const opts = { maxTokens: 5, temperature: 0.9, topK: 20, topP: 0.9, seed: 3, stopAtEos: false };
    for await (const t of new Generation(model, "ab", opts)) if (t.id >= 0) ids.push(t.id);
    return ids;
  };
  assert.deepEqual(await sample(), await sample());
  assert.throws(() => new Generation(model, "x".repeat(40)), /context holds 16/);
  model.close();
});
