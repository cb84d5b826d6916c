// Quality of the honest DRAM footprint on the real model: resident matrices at their
// storage precision (f16) and the f16 KV cache, in dense and flash-naive modes from the
// checkpoint converted to f16 (and dense from the F16 checkpoint itself), against
// reference.json and an independent float32 full recompute, and against the same file
// with its resident matrices expanded to f32.

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { type LoadedModel, loadModel, type Mode } from "../core/engine.ts";
import { referenceLogits } from "./reference_forward.ts";
import { haveRealModel, maxAbsDiff, REAL_MODEL_DIR } from "./helpers.ts";
import { fixture } from "./fixtures.ts";

/** A prompt of reference.json (see the model's README.md). */
interface ReferencePrompt {
  text: string;
  ids: number[];
  last_top5_ids: number[];
  greedy_16: number[];
}

const present = haveRealModel();

/** Greedy tokens reference.json holds per prompt. */
const GREEDY_TOKENS = 16;

/** The real checkpoint converted to an f16 flashlm file, once (shared: read only). */
async function realFlashModel(): Promise<string> {
  const weights = await Deno.stat(`${REAL_MODEL_DIR}/model.safetensors`);
  const recipe = {
    name: "real-opt-f16",
    // The checkpoint is outside the sources the key covers: its size and time stand for it.
    options: { dir: REAL_MODEL_DIR, size: weights.size, mtime: weights.mtime?.getTime() },
    builtBy: import.meta.url,
  };
  const dir = await fixture(recipe, async (out) => {
    await convertHfToFlash(REAL_MODEL_DIR, `${out}/tiny.flm`, { dtype: "f16" });
  });
  return `${dir}/tiny.flm`;
}

/** Ids of the 5 largest logits, largest first. */
function top5(logits: Float32Array): number[] {
  return [...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, 5);
}

/** Greedy decoding of `n` tokens after `ids`: the tokens and the top-5 ids at each step. */
async function greedyWithTop5(
  model: LoadedModel,
  ids: number[],
  n: number,
): Promise<{ tokens: number[]; top5s: number[][] }> {
  let logits: Float32Array = new Float32Array(0);
  for (let pos = 0; pos < ids.length; pos++) {
    logits = await model.transformer.forward(ids[pos], pos);
  }
  const tokens: number[] = [];
  const top5s: number[][] = [];
  for (let step = 0; step < n; step++) {
    const top = top5(logits);
    top5s.push(top);
    tokens.push(top[0]);
    if (step < n - 1) logits = await model.transformer.forward(top[0], ids.length + step);
  }
  return { tokens, top5s };
}

async function referencePrompts(): Promise<ReferencePrompt[]> {
  const reference = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/reference.json`));
  return reference.prompts;
}

Deno.test({
  name:
    "the real model with f16 resident weights and an f16 KV cache generates reference.json's greedy tokens with an f32 recompute's top-5 at every step, dense and flash-naive",
  ignore: !present,
  fn: async () => {
    const prompts = await referencePrompts();
    const flm = await realFlashModel();
    const runs: [string, string, Mode][] = [
      ["dense from the F16 checkpoint", REAL_MODEL_DIR, "dense"],
      ["dense from the f16 file", flm, "dense"],
      ["flash-naive from the f16 file", flm, "naive"],
    ];
    // Top-5 ids at each greedy step, from an independent float32 recompute of the whole sequence.
    const expected: number[][][] = [];
    for (const p of prompts) {
      const seq = [...p.ids, ...p.greedy_16];
      const full = await referenceLogits(REAL_MODEL_DIR, seq);
      const V = full.length / seq.length;
      const steps: number[][] = [];
      for (let step = 0; step < GREEDY_TOKENS; step++) {
        const pos = p.ids.length - 1 + step;
        steps.push(top5(full.subarray(pos * V, (pos + 1) * V)));
      }
      expected.push(steps);
    }
    for (const [what, path, mode] of runs) {
      const model = await loadModel(path, { mode });
      try {
        if (path === REAL_MODEL_DIR) {
          assert.equal(model.transformer.weights.tokenEmbedding.dtype, "f16", what);
          assert.equal(model.transformer.weights.layers[0].wq.dtype, "f16", what);
        }
        for (const [i, p] of prompts.entries()) {
          assert.deepEqual(
            model.tokenizer.encode(p.text),
            p.ids,
            `ids of ${JSON.stringify(p.text)}`,
          );
          const { tokens, top5s } = await greedyWithTop5(model, p.ids, GREEDY_TOKENS);
          assert.deepEqual(top5s[0], p.last_top5_ids, `${what}: last prompt position's top 5`);
          assert.deepEqual(tokens, p.greedy_16, `${what}: greedy tokens of prompt ${i}`);
          for (let step = 0; step < GREEDY_TOKENS; step++) {
            assert.deepEqual(top5s[step], expected[i][step], `${what}: prompt ${i} step ${step}`);
          }
        }
      } finally {
        model.close();
      }
    }
  },
});

Deno.test({
  name:
    "on the real model, stored-precision resident weights give logits within 1e-3 of the same weights expanded to f32",
  ignore: !present,
  fn: async () => {
    const prompts = (await referencePrompts()).slice(0, 3);
    const flm = await realFlashModel();
    const runs: [string, Mode][] = [[REAL_MODEL_DIR, "dense"], [flm, "dense"], [flm, "naive"]];
    for (const [path, mode] of runs) {
      const stored = await loadModel(path, { mode });
      const wide = await loadModel(path, { mode, resident: "f32" });
      try {
        for (const p of prompts) {
          for (let pos = 0; pos < p.ids.length; pos++) {
            const a = (await stored.transformer.forward(p.ids[pos], pos)).slice();
            const b = await wide.transformer.forward(p.ids[pos], pos);
            const diff = maxAbsDiff(a, b);
            assert.ok(
              diff <= 1e-3,
              `${path} ${mode}: ${JSON.stringify(p.text)} pos ${pos}: ${diff}`,
            );
          }
        }
      } finally {
        stored.close();
        wide.close();
      }
    }
  },
});
