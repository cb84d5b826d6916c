import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { type LoadedModel, loadModel } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { referenceLogits } from "./reference_forward.ts";
import { haveRealModel, maxAbsDiff, REAL_MODEL_DIR } from "./helpers.ts";

interface ReferencePrompt {
  text: string;
  ids: number[];
  last_top5_ids: number[];
  last_top5_logits: number[];
  greedy_16: number[];
  greedy_16_text: string;
}

const present = haveRealModel();

async function greedy(model: LoadedModel, ids: number[], n: number): Promise<number[]> {
  const gen = new Generation(model, ids, { maxTokens: n, stopAtEos: false });
  const out: number[] = [];
  for await (const t of gen) if (t.id >= 0) out.push(t.id);
  return out;
}

Deno.test({
  name:
    "the real OPT checkpoint, converted, generates reference.json's greedy tokens in dense and flash-naive modes",
  ignore: !present,
  fn: async () => {
    const reference = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/reference.json`));
    const prompts: ReferencePrompt[] = reference.prompts;
    const dir = await Deno.makeTempDir({ prefix: "flashlm-real-" });
    const flm = `${dir}/tiny.flm`;
    await convertHfToFlash(REAL_MODEL_DIR, flm, { dtype: "f16" });
    const dense = await loadModel(REAL_MODEL_DIR, { mode: "dense" });
    const naive = await loadModel(flm, { mode: "naive" });
    try {
      for (const p of prompts) {
        assert.deepEqual(dense.tokenizer.encode(p.text), p.ids, `ids of ${JSON.stringify(p.text)}`);
        // Last-position logits: top 5 ids and values as the independent implementation has them.
        let logits: Float32Array = new Float32Array(0);
        for (let pos = 0; pos < p.ids.length; pos++) {
          logits = await naive.transformer.forward(p.ids[pos], pos);
        }
        const top5 = [...logits.keys()].sort((a, b) => logits[b] - logits[a]).slice(0, 5);
        assert.deepEqual(top5, p.last_top5_ids);
        top5.forEach((id, i) =>
          assert.ok(Math.abs(logits[id] - p.last_top5_logits[i]) < 2e-3, `logit ${id}`)
        );

        const fromDense = await greedy(dense, p.ids, 16);
        const fromNaive = await greedy(naive, p.ids, 16);
        assert.deepEqual(fromDense, p.greedy_16, "dense greedy tokens");
        assert.deepEqual(fromNaive, fromDense, "flash-naive equals dense token for token");
        const text = naive.tokenizer.decode(fromNaive);
        assert.equal(text, p.greedy_16_text);
        // English words and punctuation only (the model is weak and loops, but it is English).
        assert.match(text, /^[A-Za-z0-9 ,.'"<>@\-=()\n]+$/);
      }
    } finally {
      dense.close();
      naive.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the real OPT checkpoint's KV-cached logits equal an independent full recompute",
  ignore: !present,
  fn: async () => {
    const ids = [2, 16694, 277, 21, 273, 25];
    const model = await loadModel(REAL_MODEL_DIR, { mode: "dense" });
    const full = await referenceLogits(REAL_MODEL_DIR, ids);
    const V = model.config.vocabSize;
    for (let pos = 0; pos < ids.length; pos++) {
      const logits = await model.transformer.forward(ids[pos], pos);
      const diff = maxAbsDiff(logits, full.subarray(pos * V, (pos + 1) * V));
      assert.ok(diff < 1e-3, `position ${pos}: ${diff}`);
    }
    model.close();
  },
});
