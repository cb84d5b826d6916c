import { strict as assert } from "node:assert";
import { captureActivations, readCapturedLayer } from "../core/train/capture.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel, type LoadOptions, readAllFfn } from "../core/engine.ts";
import { Generation } from "../core/generate.ts";
import { NeuronStore } from "../core/neuron_store.ts";
import { Rng } from "../core/sampler.ts";
import { bundleBytes } from "../kernels/weights.ts";
import { type ActivationPredictor, OraclePredictor, SparseFlashFfn } from "../core/sparse_ffn.ts";
import type { DenseFfn } from "../core/ffn.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { Transformer } from "../core/transformer.ts";
import { loadResidentWeights } from "../core/weights.ts";
import { FlashReader } from "../io/reader.ts";
import { logitsPerPosition, maxAbsDiff, promptIds, TINY, tinyHfModel } from "./helpers.ts";

for (const dtype of ["f32", "f16", "int8"] as const) {
  Deno.test(`swap-delete keeps a neuron store of ${dtype} byte rows identical to a reference set over 10,000 random steps`, () => {
    const numNeurons = 300, capacity = 120;
    const store = new NeuronStore(capacity, numNeurons, { dtype, d: 8 });
    const rowBytes = store.rowBytes;
    assert.equal(rowBytes, bundleBytes(dtype, 8));
    assert.equal(store.bytes.length, capacity * rowBytes);
    // Each row's bytes: a pattern unique to its neuron (byte j of neuron n).
    const pattern = (n: number, j: number): number => (n * 7 + j * 13) & 0xff;
    const reference = new Set<number>();
    const rng = new Rng(11);
    for (let step = 0; step < 10_000; step++) {
      const neuron = Math.floor(rng.next() * numNeurons);
      if (reference.has(neuron)) {
        store.delete(neuron);
        reference.delete(neuron);
      } else if (reference.size < capacity) {
        const row = store.insert(neuron, neuron + 0.5);
        for (let j = 0; j < rowBytes; j++) store.bytes[row * rowBytes + j] = pattern(neuron, j);
        reference.add(neuron);
      }
      assert.equal(store.numUsed, reference.size);
      if (step % 97 === 0 || step === 9_999) {
        const held = new Set(store.pointer.subarray(0, store.numUsed));
        assert.deepEqual(held, reference);
        for (let r = 0; r < store.numUsed; r++) {
          const n = store.pointer[r];
          assert.equal(store.rowOf[n], r);
          assert.equal(store.bias[r], n + 0.5);
          for (let j = 0; j < rowBytes; j++) {
            assert.equal(store.bytes[r * rowBytes + j], pattern(n, j), "row moved with its neuron");
          }
        }
        for (let n = 0; n < numNeurons; n++) assert.equal(store.rowOf[n] >= 0, reference.has(n));
      }
    }
  });
}

Deno.test("the neuron store refuses a full insert, a double insert and deleting an absent neuron", () => {
  const store = new NeuronStore(1, 4, { dtype: "f32", d: 2 });
  store.insert(1, 0);
  assert.throws(() => store.insert(1, 0), /already in the store/);
  assert.throws(() => store.insert(2, 0), /full/);
  assert.throws(() => store.delete(3), /not in the store/);
});

async function fixture(): Promise<{ dir: string; flm: string }> {
  const dir = await tinyHfModel();
  const flm = `${dir}/m.flm`;
  await convertHfToFlash(dir, flm, { dtype: "f32" });
  return { dir, flm };
}

const CASES: [string, LoadOptions][] = [
  ["window k = 1, every neuron may stay", { windowK: 1 }],
  ["window k = 4, every neuron may stay", { windowK: 4 }],
  ["a 50% FFN budget (rows capped, lowest activation counts evicted)", {
    memory: { kind: "ffn-percent", percent: 50 },
  }],
  ["a 50% FFN budget with the paper's window (least recently active evicted)", {
    memory: { kind: "ffn-percent", percent: 50 },
    eviction: "window",
  }],
];

for (const [what, options] of CASES) {
  Deno.test(`sparse FFN with the oracle predictor equals the dense FFN: ${what}`, async () => {
    const { dir, flm } = await fixture();
    const ids = promptIds(40, 400);
    // An f32 KV cache, so the only difference is the FFN's: an f16 cache would round the
    // two runs' tiny f32 differences to neighbouring halves now and then.
    const dense = await loadModel(flm, { mode: "dense", kvCache: "f32" });
    const sparse = await loadModel(flm, {
      mode: "sparse",
      predictor: "oracle",
      kvCache: "f32",
      ...options,
    });
    const a = await logitsPerPosition(dense, ids);
    const b = await logitsPerPosition(sparse, ids);
    const ffn = sparse.transformer.ffn as SparseFlashFfn;
    assert.ok(ffn.stats.neuronsPredicted > 0);
    assert.ok(
      ffn.stats.neuronsPredicted < ids.length * TINY.nLayers! * TINY.dFfn!,
      "the model is sparse",
    );
    if (options.memory) {
      assert.ok(ffn.stores.every((s) => s.capacity < TINY.dFfn!), "rows are capped");
      assert.ok(ffn.stats.neuronsEvicted > 0);
    }
    for (let pos = 0; pos < ids.length; pos++) {
      assert.ok(
        maxAbsDiff(a[pos], b[pos]) <= 1e-5,
        `position ${pos}: ${maxAbsDiff(a[pos], b[pos])}`,
      );
    }
    dense.close();
    sparse.close();
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("with window k the bytes read per token equal the newly needed neurons times the bundle size", async () => {
  const { dir, flm } = await fixture();
  const k = 2;
  const prompt = promptIds(24, 400);
  // The truth, independently: every layer's true active sets from the dense model.
  const dense = await loadModel(flm, { mode: "dense" });
  const capture = await captureActivations(dense, [prompt], `${dir}/capture`);
  dense.close();
  const masks: Uint8Array[] = [];
  for (let l = 0; l < TINY.nLayers!; l++) masks.push((await readCapturedLayer(capture, l)).mask);
  const dFfn = TINY.dFfn!;
  const activeAt = (l: number, t: number): Set<number> => {
    const s = new Set<number>();
    for (let j = 0; j < dFfn; j++) if (masks[l][t * dFfn + j]) s.add(j);
    return s;
  };

  const sparse = await loadModel(flm, {
    mode: "sparse",
    predictor: "oracle",
    windowK: k,
    keepStale: false,
  });
  const gen = new Generation(sparse, prompt, { maxTokens: 1, telemetry: true });
  for await (const _ of gen) { /* run the prompt */ }
  const bundleBytes = 2 * TINY.dModel! * 4;
  let total = 0;
  for (let t = 0; t < prompt.length; t++) {
    let expected = 0;
    for (let l = 0; l < TINY.nLayers!; l++) {
      const window = new Set<number>();
      for (let u = Math.max(0, t - k); u < t; u++) for (const n of activeAt(l, u)) window.add(n);
      for (const n of activeAt(l, t)) if (!window.has(n)) expected++;
    }
    const got = gen.stats.perToken[t].ffn;
    assert.equal(got.neuronsLoaded, expected, `token ${t}`);
    assert.equal(got.bytesRead, expected * bundleBytes, `token ${t}`);
    total += got.bytesRead;
  }
  const ffn = sparse.transformer.ffn as SparseFlashFfn;
  assert.equal(ffn.reader.stats.bytes, total, "what the reader delivered is what was reported");
  sparse.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sparse mode without a trained predictor says to run train-predictor", async () => {
  const { dir, flm } = await fixture();
  await assert.rejects(loadModel(flm, { mode: "sparse" }), /train-predictor/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("with frequency eviction a token reads exactly the neurons its store lacks and evicts the lowest decayed counts", async () => {
  const { dir, flm } = await fixture();
  const prompt = promptIds(32, 400);
  const dense = await loadModel(flm, { mode: "dense" });
  const capture = await captureActivations(dense, [prompt], `${dir}/capture`);
  dense.close();
  const dFfn = TINY.dFfn!;
  const masks: Uint8Array[] = [];
  for (let l = 0; l < TINY.nLayers!; l++) masks.push((await readCapturedLayer(capture, l)).mask);

  const sparse = await loadModel(flm, {
    mode: "sparse",
    predictor: "oracle",
    memory: { kind: "ffn-percent", percent: 50 },
  });
  const ffn = sparse.transformer.ffn as SparseFlashFfn;
  assert.equal(ffn.eviction, "frequency");
  const decay = ffn.scores[0].decay;
  const scores = masks.map(() => new Float64Array(dFfn)); // the reference, in float64
  const bundleBytes = 2 * TINY.dModel! * 4;
  let evictions = 0;
  for (let t = 0; t < prompt.length; t++) {
    const before = ffn.stores.map((s) => new Set(s.pointer.subarray(0, s.numUsed)));
    const loadedBefore = ffn.stats.neuronsLoaded;
    const bytesBefore = ffn.stats.bytesRead;
    await sparse.transformer.forward(prompt[t], t, false);
    let expected = 0;
    for (let l = 0; l < TINY.nLayers!; l++) {
      const active = new Set<number>();
      for (let j = 0; j < dFfn; j++) if (masks[l][t * dFfn + j]) active.add(j);
      const store = ffn.stores[l];
      assert.ok(active.size <= store.capacity, "the test needs stores that hold a token's set");
      for (let j = 0; j < dFfn; j++) scores[l][j] = scores[l][j] * decay + (active.has(j) ? 1 : 0);
      for (const n of active) if (!before[l].has(n)) expected++;
      const after = new Set(store.pointer.subarray(0, store.numUsed));
      assert.ok(after.size <= store.capacity);
      for (const n of active) assert.ok(after.has(n), `token ${t} layer ${l}: neuron ${n} held`);
      const evicted = [...before[l]].filter((n) => !after.has(n));
      const keptIdle = [...after].filter((n) => !active.has(n));
      evictions += evicted.length;
      if (evicted.length > 0 && keptIdle.length > 0) {
        const worstEvicted = Math.max(...evicted.map((n) => scores[l][n]));
        const bestKept = Math.min(...keptIdle.map((n) => scores[l][n]));
        assert.ok(worstEvicted <= bestKept + 1e-5, `token ${t} layer ${l}: evicted a higher score`);
      }
    }
    assert.equal(ffn.stats.neuronsLoaded - loadedBefore, expected, `token ${t}`);
    assert.equal(ffn.stats.bytesRead - bytesBefore, expected * bundleBytes, `token ${t}`);
  }
  assert.ok(evictions > 0, "the budget made the stores evict");
  sparse.close();
  await Deno.remove(dir, { recursive: true });
});

/**
 * A predictor whose "logit" is the neuron's true pre-activation (fc1 · x + b, in
 * float64) with threshold 0: it predicts exactly the active neurons, and finds a
 * neuron worth reading above a load threshold of `loadLogit`, so the test knows which.
 */
class PreActivationPredictor implements ActivationPredictor {
  pre: Float64Array;
  constructor(
    private fc1: Float32Array[],
    private bias: Float32Array[],
    private dModel: number,
    private loadLogit: number,
  ) {
    this.pre = new Float64Array(bias[0].length);
  }
  predict(layer: number, x: Float32Array, out: Int32Array): number {
    let n = 0;
    for (let i = 0; i < this.pre.length; i++) {
      let z = this.bias[layer][i];
      for (let j = 0; j < this.dModel; j++) z += this.fc1[layer][i * this.dModel + j] * x[j];
      this.pre[i] = z;
      if (z > 0) out[n++] = i;
    }
    return n;
  }
  worthReading(neuron: number): boolean {
    return this.pre[neuron] > this.loadLogit;
  }
}

Deno.test("a neuron missing from DRAM is read only if the predictor finds it worth reading, and eval's recall counts what was computed", async () => {
  const { dir, flm } = await fixture();
  const dense = await loadModel(flm, { mode: "dense" });
  const denseFfn = dense.transformer.ffn as DenseFfn; // the file's bundles as stored
  const fc1 = (await readAllFfn(await FlashModelFile.open(flm))).map((w) => w.fc1);
  const fc1Bias = dense.transformer.weights.layers.map((l) => l.fc1Bias);
  const dModel = TINY.dModel!;
  const loadLogit = 0.5;

  const file = await FlashModelFile.open(flm);
  const resident = await loadResidentWeights(file.config, file);
  const predictor = new PreActivationPredictor(fc1, fc1Bias, dModel, loadLogit);
  const ffn = new SparseFlashFfn(file, resident, await FlashReader.open(flm), {
    predictor,
    windowK: 1,
  });
  ffn.measureRecallAgainst(new OraclePredictor(denseFfn.weights, fc1Bias, dModel));
  const transformer = new Transformer(resident, ffn, 64);
  // Spy on what each layer's predictor saw, to know the sure and the unsure neurons.
  const predicted: { layer: number; ids: number[]; pre: Float64Array }[] = [];
  const predict = predictor.predict.bind(predictor);
  predictor.predict = (layer, x, out) => {
    const n = predict(layer, x, out);
    predicted.push({ layer, ids: [...out.subarray(0, n)], pre: predictor.pre.slice() });
    return n;
  };

  const prompt = promptIds(24, 400);
  const bundleBytes = 2 * dModel * 4;
  let skippedAll = 0, activeAll = 0, computedAll = 0;
  for (let t = 0; t < prompt.length; t++) {
    const before = ffn.stores.map((s) => new Set(s.pointer.subarray(0, s.numUsed)));
    const start = { ...ffn.stats };
    predicted.length = 0;
    await transformer.forward(prompt[t], t, false);
    let loads = 0, skipped = 0, computed = 0, active = 0;
    for (const { layer, ids, pre } of predicted) {
      const after = new Set(ffn.stores[layer].pointer.subarray(0, ffn.stores[layer].numUsed));
      for (const n of ids) {
        active++;
        if (before[layer].has(n)) assert.ok(after.has(n), "a neuron in DRAM stays and is computed");
        else if (pre[n] > loadLogit) {
          loads++;
          assert.ok(after.has(n), `token ${t} layer ${layer}: sure neuron ${n} read`);
        } else {
          skipped++;
          assert.ok(!after.has(n), `token ${t} layer ${layer}: unsure neuron ${n} not read`);
        }
        if (after.has(n)) computed++;
      }
      assert.equal(
        after.size,
        before[layer].size + ids.filter((n) => after.has(n) && !before[layer].has(n)).length,
      );
    }
    assert.equal(ffn.stats.neuronsLoaded - start.neuronsLoaded, loads, `token ${t}`);
    assert.equal(ffn.stats.bytesRead - start.bytesRead, loads * bundleBytes, `token ${t}`);
    assert.equal(ffn.stats.neuronsSkipped - start.neuronsSkipped, skipped, `token ${t}`);
    assert.equal(ffn.stats.neuronsTrulyActive - start.neuronsTrulyActive, active, `token ${t}`);
    assert.equal(
      ffn.stats.neuronsTrulyComputed - start.neuronsTrulyComputed,
      computed,
      `token ${t}`,
    );
    skippedAll += skipped;
    activeAll += active;
    computedAll += computed;
  }
  assert.ok(skippedAll > 0, "the load threshold left some unsure neurons unread");
  assert.ok(computedAll < activeAll && computedAll > 0.5 * activeAll);
  ffn.close();
  dense.close();
  await Deno.remove(dir, { recursive: true });
});
