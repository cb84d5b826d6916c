/**
 * Sparsity of gated (Llama) FFNs on real activations: `../shared/models/tiny-llama-brown`
 * (a ReLU-gated and a SiLU Llama, trained) against its reference.json in the dense, naive and
 * sparse (oracle) modes; per-layer cutoffs on |act(gate·x)| (CATS) — what the sparse path
 * computes with them, and `train-predictor --sparsity` calibrating and storing them.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel, type LoadOptions, type Mode } from "../core/engine.ts";
import type { DenseFfn } from "../core/ffn.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { rewriteWithPredictor } from "../core/flash_write.ts";
import { thresholdedGate } from "../core/gate_thresholds.ts";
import { gateActivation } from "../core/config.ts";
import { trainPredictor } from "../core/train/train_predictor.ts";
import { haveSharedFixture } from "./helpers.ts";
import { writeSyntheticLlama } from "./llama_reference.ts";

const BROWN = new URL("../../shared/models/tiny-llama-brown", import.meta.url).pathname;
const present = haveSharedFixture(
  `${BROWN}/reference.json`,
  `${BROWN}/relu/hf/model.safetensors`,
  `${BROWN}/silu/hf/model.safetensors`,
);

interface ReferencePrompt {
  prompt: string;
  prompt_ids: number[];
  greedy: number[];
}

/**
 * Greedy continuation of every prompt (the model's own tokens fed back): the ids chosen,
 * and the FFN bytes read.
 */
async function greedy(
  path: string,
  prompts: ReferencePrompt[],
  options: LoadOptions,
): Promise<{ ids: number[][]; bytesRead: number }> {
  const model = await loadModel(path, options);
  const ids: number[][] = [];
  try {
    for (const p of prompts) {
      assert.deepEqual(model.tokenizer.encode(p.prompt), p.prompt_ids, "prompt ids");
      let logits: Float32Array = new Float32Array(0);
      for (let i = 0; i < p.prompt_ids.length; i++) {
        logits = await model.transformer.forward(p.prompt_ids[i], i);
      }
      const out: number[] = [];
      for (let k = 0; k < p.greedy.length; k++) {
        let best = 0;
        for (let j = 1; j < logits.length; j++) if (logits[j] > logits[best]) best = j;
        out.push(best);
        logits = await model.transformer.forward(best, p.prompt_ids.length + k);
      }
      ids.push(out);
    }
    return { ids, bytesRead: model.transformer.ffn.stats.bytesRead };
  } finally {
    model.close();
  }
}

Deno.test({
  name:
    "tiny-llama-brown: both models give reference.json's 16 greedy tokens of every prompt in dense, naive and sparse (oracle) modes",
  ignore: !present,
  async fn() {
    const reference = JSON.parse(await Deno.readTextFile(`${BROWN}/reference.json`));
    const dir = await Deno.makeTempDir();
    try {
      for (const variant of ["relu", "silu"]) {
        const prompts: ReferencePrompt[] = reference.models[variant];
        const want = prompts.map((p) => p.greedy);
        const hf = `${BROWN}/${variant}/hf`;
        const flm = `${dir}/${variant}.flm`;
        await convertHfToFlash(hf, flm, { dtype: "f16" });
        const runs: [string, string, LoadOptions][] = [
          ["dense (hf)", hf, {}],
          ...(["dense", "naive"] as Mode[]).map((mode): [string, string, LoadOptions] => [
            `${mode} (flm f16)`,
            flm,
            { mode },
          ]),
          ["sparse (flm f16, oracle)", flm, { mode: "sparse", predictor: "oracle" }],
        ];
        const read: Record<string, number> = {};
        for (const [what, path, options] of runs) {
          const { ids, bytesRead } = await greedy(path, prompts, options);
          assert.deepEqual(ids, want, `${variant} ${what}`);
          read[what] = bytesRead;
        }
        // The ReLU model's oracle reads only the neurons whose gate fires (under a fifth
        // past layer 0, README); the SiLU one, without cutoffs, every neuron once.
        const naive = read["naive (flm f16)"], sparse = read["sparse (flm f16, oracle)"];
        if (variant === "relu") assert.ok(sparse < 0.3 * naive, `relu read ${sparse} of ${naive}`);
        else assert.ok(sparse > 0 && sparse < naive, `silu read ${sparse} of ${naive}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "tiny-llama-brown SiLU with per-layer cutoffs: the sparse path (oracle) computes exactly the dense FFN whose gate is cut at τ, with every row in DRAM or a quarter (the rest through the scratch), and reads less",
  ignore: !present,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const flm = `${dir}/silu.flm`;
      await convertHfToFlash(`${BROWN}/silu/hf`, flm, { dtype: "f16" });
      const file = await FlashModelFile.open(flm);
      const { nLayers, dModel, dFfn } = file.config;
      const cutoffs = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06].slice(0, nLayers);
      // A stand-in predictor (rank 1, zeros): the oracle is what runs; the file carries the cutoffs.
      const values = nLayers * (dModel + dFfn + dFfn);
      await rewriteWithPredictor(file, flm, {
        meta: {
          layers: cutoffs.map((gateThreshold) => ({ rank: 1, threshold: 0.5, gateThreshold })),
        },
        bytes: new Uint8Array(4 * values),
        report: null,
      });
      const ids = [1, 450, 716, 6586, 338, 263, 2107, 767];
      const sparse = await loadModel(flm, { mode: "sparse", predictor: "oracle", kvCache: "f32" });
      const quarter = await loadModel(flm, {
        mode: "sparse",
        predictor: "oracle",
        kvCache: "f32",
        memory: { kind: "ffn-percent", percent: 25 },
      });
      const dense = await loadModel(flm, { mode: "dense", kvCache: "f32" });
      const plain = await loadModel(flm, { mode: "dense", kvCache: "f32" });
      try {
        const gate = gateActivation(dense.config)!;
        const ffn = dense.transformer.ffn as DenseFfn;
        ffn.weights.forEach((w, l) => {
          if (!("fc1" in w)) w.gate = thresholdedGate(gate, cutoffs[l]);
        });
        let worst = 0, worstQuarter = 0, moved = 0;
        for (let t = 0; t < ids.length; t++) {
          const want = (await dense.transformer.forward(ids[t], t)).slice();
          const unCut = await plain.transformer.forward(ids[t], t);
          const got = await sparse.transformer.forward(ids[t], t);
          const small = await quarter.transformer.forward(ids[t], t);
          for (let i = 0; i < got.length; i++) {
            worstQuarter = Math.max(worstQuarter, Math.abs(small[i] - want[i]));
            worst = Math.max(worst, Math.abs(got[i] - want[i]));
            moved = Math.max(moved, Math.abs(unCut[i] - want[i]));
          }
        }
        assert.ok(worst < 1e-4, `sparse vs cut dense: ${worst}`);
        assert.ok(
          worstQuarter < 1e-4,
          `sparse in a quarter of the rows vs cut dense: ${worstQuarter}`,
        );
        assert.ok(moved > 1e-3, `the cutoffs change the logits (${moved})`);
        const s = sparse.transformer.ffn.stats;
        assert.ok(s.neuronsLoaded < 0.8 * ids.length * nLayers * dFfn, `${s.neuronsLoaded} loaded`);
      } finally {
        sparse.close();
        quarter.close();
        dense.close();
        plain.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("train-predictor --sparsity on a SiLU Llama stores per-layer cutoffs that skip that share, uniform or allocated greedily", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeSyntheticLlama(`${dir}/hf`, {
      dModel: 32,
      dFfn: 64,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      tied: true,
      hiddenAct: "silu",
      seed: 5,
    });
    await convertHfToFlash(`${dir}/hf`, `${dir}/m.flm`, { dtype: "f32" });
    const windows = Array.from(
      { length: 12 },
      (_, w) => Array.from({ length: 32 }, (_, i) => i === 0 ? 1 : 3 + ((w * 31 + i * 7) % 90)),
    );
    for (const allocation of ["uniform", "greedy"] as const) {
      const out = `${dir}/${allocation}.flm`;
      const report = await trainPredictor(`${dir}/m.flm`, out, {
        tokenWindows: windows,
        windowTokens: 32,
        epochs: 2,
        sparsity: 0.4,
        allocation,
        calibrationWindows: 2,
      });
      const g = report.gateCutoffs!;
      assert.equal(g.allocation, allocation);
      const mean = g.shares.reduce((a, b) => a + b) / g.shares.length;
      assert.ok(Math.abs(mean - 0.4) < 1e-9, `mean share ${mean}`);
      if (allocation === "uniform") assert.deepEqual(g.shares, [0.4, 0.4]);
      else assert.equal(g.curves?.length, 2);
      for (const [l, skipped] of g.heldOutSkipped.entries()) {
        assert.ok(Math.abs(skipped - g.shares[l]) < 0.1, `layer ${l} skips ${skipped}`);
      }
      const file = await FlashModelFile.open(out);
      const meta = file.header.predictor!.meta as { layers: { gateThreshold: number }[] };
      assert.deepEqual(meta.layers.map((l) => l.gateThreshold), g.cutoffs);
      assert.ok(g.cutoffs.every((c) => c > 0));
      // The trained predictor runs the sparse path with those cutoffs.
      const sparse = await loadModel(out, { mode: "sparse" });
      try {
        for (let t = 0; t < 8; t++) await sparse.transformer.forward(windows[0][t], t);
        assert.ok(sparse.transformer.ffn.stats.neuronsPredicted < 8 * 2 * 64);
      } finally {
        sparse.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
