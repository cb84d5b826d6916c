import { strict as assert } from "node:assert";
import { type LoadedModel, loadModel } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { referenceLogits } from "./reference_forward.ts";
import { corpusWindows, readCorpus } from "../core/corpus.ts";
import { agreement, perplexity, trackRecallAgainstDense } from "../core/eval.ts";
import { formatReport, trainPredictor } from "../core/train/train_predictor.ts";
import {
  haveRealModel,
  haveSharedFixture,
  HELDOUT_TEXT,
  maxAbsDiff,
  REAL_MODEL_DIR,
} from "./helpers.ts";
import { realFlashModel } from "./fixtures.ts";

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
    const flm = await realFlashModel();
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

Deno.test({
  name:
    "on the real OPT checkpoint, flashlm's own predictor reaches 95% held-out recall, the sparse FFN computes 95% of the truly active neurons and perplexity stays within 2%",
  ignore: !present || !haveSharedFixture(HELDOUT_TEXT),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-real-pred-" });
    const flm = `${dir}/tiny.flm`;
    const report = await trainPredictor(await realFlashModel(), flm, {
      textPath: HELDOUT_TEXT,
      windows: 32,
      epochs: 4,
    });
    console.log(formatReport(report));
    for (const layer of report.layers) {
      assert.ok(
        layer.metrics.recall >= 0.95,
        `layer ${layer.layer} recall ${layer.metrics.recall}`,
      );
      assert.ok(layer.metrics.heldOutSamples > 500);
    }
    const dense = await loadModel(flm, { mode: "dense" });
    const sparse = await loadModel(flm, {
      mode: "sparse",
      memory: { kind: "ffn-percent", percent: 50 },
    });
    assert.ok(trackRecallAgainstDense(sparse, dense));
    const ids = await readCorpus(HELDOUT_TEXT, dense.tokenizer);
    const windows = corpusWindows(ids, 256, 3, 2, "end"); // text the predictor never saw
    const d = await perplexity(dense, windows);
    const s = await perplexity(sparse, windows);
    const ffnBytes = 6 * 1024 * 1024;
    const share = s.ffn.bytesRead / s.forwardPasses / ffnBytes;
    const recall = s.ffn.neuronsTrulyComputed / s.ffn.neuronsTrulyActive;
    console.log(
      `dense ppl ${d.perplexity.toFixed(2)}, sparse ppl ${s.perplexity.toFixed(2)}, ` +
        `top-1 agreement ${(100 * agreement(d.argmax, s.argmax)).toFixed(1)}%, FFN read per token ${
          (100 * share).toFixed(2)
        }%, effective recall ${(100 * recall).toFixed(2)}%`,
    );
    assert.ok(s.ffn.neuronsSkipped > 0, "the default load threshold left unsure neurons unread");
    assert.ok(recall >= 0.95, "the sparse FFN computed at least 95% of the truly active neurons");
    assert.ok(
      Math.abs(s.perplexity / d.perplexity - 1) <= 0.02,
      "sparse perplexity within 2% of dense",
    );
    assert.ok(share < 0.5, "the window saves most of the FFN reads");
    dense.close();
    sparse.close();
    await Deno.remove(dir, { recursive: true });
  },
});
