import { strict as assert } from "node:assert";
import { CacheCurveAccumulator, FrequencyScores } from "../core/window.ts";
import { describePlan, measuredPlanInputs, planMemory } from "../core/memory_plan.ts";
import type { ModelConfig } from "../core/config.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { planFromFile } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { rewriteWithPredictor } from "../core/flash_write.ts";
import {
  DEFAULT_LOAD_RECALL,
  deserializePredictor,
  parsePlanMeasurements,
  serializePredictor,
} from "../core/predictor.ts";
import { trainPredictor } from "../core/train/train_predictor.ts";
import { FlashlmError } from "../io/errors.ts";
import { Rng } from "../core/sampler.ts";
import { type ActivationPredictor, SparseFlashFfn } from "../core/sparse_ffn.ts";
import { loadResidentWeights } from "../core/weights.ts";
import { FlashReader } from "../io/reader.ts";
import { tinyHfModel } from "./helpers.ts";

Deno.test("selectLowest puts the lowest scores first, ties included, as a full sort would", () => {
  const rng = new Rng(5);
  for (let trial = 0; trial < 500; trial++) {
    const n = 1 + Math.floor(rng.next() * 60);
    const f = new FrequencyScores(n);
    // Few distinct values, so ties are common.
    for (let i = 0; i < n; i++) f.score[i] = Math.floor(rng.next() * 5);
    const m = 1 + Math.floor(rng.next() * n);
    const ids = new Int32Array(n);
    for (let i = 0; i < n; i++) ids[i] = i;
    for (let i = n - 1; i > 0; i--) { // shuffle
      const j = Math.floor(rng.next() * (i + 1));
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    const original = [...ids.subarray(0, m)];
    const count = Math.floor(rng.next() * (m + 1));
    f.selectLowest(ids, m, count);
    assert.deepEqual([...ids.subarray(0, m)].sort((a, b) => a - b), original.sort((a, b) => a - b));
    const sorted = original.map((i) => f.score[i]).sort((a, b) => a - b);
    const chosen = [...ids.subarray(0, count)].map((i) => f.score[i]).sort((a, b) => a - b);
    assert.deepEqual(chosen, sorted.slice(0, count), `trial ${trial}`);
  }
});

Deno.test("observe decays every score and adds one to the active neurons", () => {
  const f = new FrequencyScores(3, 0.5);
  f.observe(new Int32Array([2]), 1);
  f.observe(new Int32Array([0, 2]), 2);
  assert.deepEqual([...f.score], [1, 0, 1.5]);
  f.clear();
  assert.deepEqual([...f.score], [0, 0, 0]);
  assert.throws(() => new FrequencyScores(3, 0), /decay/);
});

Deno.test("load curves: a store of every neuron reads only first uses, smaller stores read more, an empty one every predicted neuron every token", () => {
  const rng = new Rng(9);
  const numNeurons = 50;
  const acc = new CacheCurveAccumulator(numNeurons, [0, 10, 20, numNeurons]);
  const sets: number[][] = [];
  for (let t = 0; t < 400; t++) {
    const s = new Set<number>();
    const size = 1 + Math.floor(rng.next() * 12);
    // Temporally correlated: half the set from a slowly moving range.
    while (s.size < size) {
      s.add(
        rng.next() < 0.5
          ? (t / 10 + Math.floor(rng.next() * 8)) % numNeurons | 0
          : Math.floor(rng.next() * numNeurons),
      );
    }
    sets.push([...s]);
    acc.add(Int32Array.from(s), s.size);
  }
  const r = acc.result();
  const seen = new Set<number>();
  let firstUses = 0;
  for (const set of sets) {
    for (const n of set) {
      if (!seen.has(n)) firstUses++;
      seen.add(n);
    }
  }
  const total = sets.reduce((sum, set) => sum + set.length, 0);
  assert.equal(
    r.loads[0],
    total,
    "a store of no rows reads every set, uncached, as the engine does",
  );
  assert.equal(r.loads[3], firstUses, "a store of every neuron");
  assert.equal(r.loadsPerToken[3], firstUses / sets.length);
  assert.ok(r.loads[1] > r.loads[2] && r.loads[2] > r.loads[3]);
  assert.equal(r.peak, Math.max(...sets.map((s) => s.length)));
  const sizes = sets.map((s) => s.length).sort((a, b) => a - b);
  assert.equal(r.p99, sizes[Math.ceil(0.99 * sizes.length) - 1], "the 99th percentile set size");
});

/**
 * Predicts a scripted set per token (the same for every layer) and finds a neuron
 * worth reading when the script says it is sure of it.
 */
class ScriptedPredictor implements ActivationPredictor {
  ids = new Int32Array(0);
  sure = new Set<number>();
  predict(_layer: number, _x: Float32Array, out: Int32Array): number {
    out.set(this.ids);
    return this.ids.length;
  }
  worthReading(neuron: number): boolean {
    return this.sure.has(neuron);
  }
}

Deno.test("the load-curve simulator reads, token by token, what the sparse FFN reads at the same rows", async () => {
  const dir = await tinyHfModel();
  const flm = `${dir}/m.flm`;
  await convertHfToFlash(dir, flm, { dtype: "f32" });
  const file = await FlashModelFile.open(flm);
  const resident = await loadResidentWeights(file.config, file);
  const { dModel, dFfn } = file.config;
  // Layer l of the engine has the simulator's l-th store size; both layers see the same sets.
  const rows = [24, 56];
  assert.equal(rows.length, file.config.nLayers);
  const predictor = new ScriptedPredictor();
  const ffn = new SparseFlashFfn(file, resident, await FlashReader.open(flm), {
    predictor,
    windowK: 1,
    rowsPerLayer: rows,
  });
  const acc = new CacheCurveAccumulator(dFfn, rows);
  const rng = new Rng(21);
  const x = new Float32Array(dModel).map(() => rng.normal()); // (dModel) any FFN input
  const out = new Float32Array(dModel); // (dModel)
  const engineLoads = rows.map(() => 0);
  for (let t = 0; t < 300; t++) {
    // A slowly moving range of neurons plus a few anywhere; now and then more than 24.
    const set = new Set<number>();
    const size = rng.next() < 0.1 ? 30 : 4 + Math.floor(rng.next() * 16);
    while (set.size < size) {
      set.add(
        rng.next() < 0.7
          ? (Math.floor(t / 8) + Math.floor(rng.next() * 20)) % dFfn
          : Math.floor(rng.next() * dFfn),
      );
    }
    predictor.ids = Int32Array.from([...set].sort((a, b) => a - b));
    predictor.sure = new Set([...set].filter(() => rng.next() < 0.8));
    for (let l = 0; l < rows.length; l++) {
      const before = ffn.stats.neuronsLoaded;
      await ffn.forward(l, x, out);
      engineLoads[l] += ffn.stats.neuronsLoaded - before;
    }
    acc.add(predictor.ids, predictor.ids.length, (neuron) => predictor.sure.has(neuron));
    assert.deepEqual(acc.result().loads, engineLoads, `token ${t}`);
  }
  assert.ok(ffn.stats.neuronsUncached > 0, "some sets did not fit the small store");
  assert.ok(ffn.stats.neuronsSkipped > 0, "some unsure missing neurons were not read");
  assert.ok(ffn.stats.neuronsEvicted > 0, "the stores evicted");
  assert.ok(engineLoads[0] > engineLoads[1], "the smaller store read more");
  ffn.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the planner splits rows by load curves exactly as a brute-force search would", () => {
  const config = {
    dModel: 8,
    dFfn: 40,
    nLayers: 3,
    nHeads: 2,
    vocabSize: 16,
    maxPositions: 8,
    positionOffset: 2,
    wordEmbedProjDim: 8,
    layerNormBefore: true,
  } as ModelConfig;
  const rows = [10, 20, 30, 40];
  const rng = new Rng(3);
  for (let trial = 0; trial < 30; trial++) {
    const curves = [0, 1, 2].map(() => {
      let v = 10 + rng.next() * 20;
      const loads = rows.map(() => (v = v * (0.2 + 0.8 * rng.next())));
      return { rows, loads, minRows: 5 + Math.floor(rng.next() * 18) };
    });
    const percent = 30 + Math.floor(rng.next() * 60);
    const plan = planMemory({
      config,
      predictorBytes: 0,
      contextLength: 8,
      budget: { kind: "ffn-percent", percent },
      loadCurves: curves,
    });
    const rowsTotal = Math.round(plan.ffnShare * 120);
    // Brute force over every combination of curve points (raised to minRows).
    let best = Infinity;
    const opts = curves.map((c) =>
      rows.map((r, j) => ({ rows: Math.max(r, c.minRows), loads: c.loads[j] }))
    );
    for (const a of opts[0]) {
      for (const b of opts[1]) {
        for (const c of opts[2]) {
          if (a.rows + b.rows + c.rows <= rowsTotal) {
            best = Math.min(best, a.loads + b.loads + c.loads);
          }
        }
      }
    }
    if (best === Infinity) {
      assert.equal(plan.expectedLoadsPerToken, null, "no split fits: the window planner decides");
      continue;
    }
    assert.ok(Math.abs(plan.expectedLoadsPerToken! - best) < 1e-9, `trial ${trial}`);
    assert.equal(plan.eviction, "frequency");
    plan.rowsPerLayer.forEach((r, l) => assert.ok(r >= curves[l].minRows && r <= 40));
    assert.ok(plan.rowsPerLayer.reduce((x, y) => x + y, 0) <= rowsTotal);
  }
});

// ---------------------------------------------------------------------------
// The planner's measurements in the predictor section

const MEASURED_LAYER = {
  sAgg: [10, 14, 17],
  newPerToken: [6, 4, 3],
  oracleSAgg: [9, 12, 14],
  oracleNewPerToken: [5, 3, 2],
  cacheRows: [32, 64],
  cacheLoads: [7, 2],
  peakPredicted: 30,
  p99Predicted: 25,
  oracleCacheLoads: [6, 1.5],
  oraclePeak: 28,
  oracleP99: 22,
};

Deno.test("the planner's measurements are read from the predictor report, and a malformed one is refused naming the file", () => {
  const report = { text: "t", cacheLoadRecall: 0.9, layers: [{ layer: 0, ...MEASURED_LAYER }] };
  assert.deepEqual(parsePlanMeasurements(report, 1, "m.flm"), {
    cacheLoadRecall: 0.9,
    layers: [MEASURED_LAYER],
  });
  // Files trained before the load curves: window statistics only.
  const old = {
    layers: [{ sAgg: [1], newPerToken: [1], oracleSAgg: [1], oracleNewPerToken: [1] }],
  };
  assert.deepEqual(parsePlanMeasurements(old, 1, "m.flm"), old);
  assert.equal(parsePlanMeasurements(undefined, 1, "m.flm"), null);
  assert.equal(parsePlanMeasurements({ text: "no layers" }, 1, "m.flm"), null);
  const withLayer = (change: Record<string, unknown>): unknown => ({
    layers: [{ ...MEASURED_LAYER, ...change }],
  });
  const bad: [string, unknown, number][] = [
    ["not an object", "report", 1],
    ["layers not an array", { layers: 3 }, 1],
    ["other layer count", { layers: [MEASURED_LAYER] }, 2],
    ["layer not an object", { layers: [null] }, 1],
    ["sAgg missing", withLayer({ sAgg: undefined }), 1],
    ["sAgg empty", withLayer({ sAgg: [] }), 1],
    ["sAgg with null", withLayer({ sAgg: [1, null, 2] }), 1],
    ["negative newPerToken", withLayer({ newPerToken: [1, -1, 2] }), 1],
    ["newPerToken shorter than sAgg", withLayer({ newPerToken: [1, 2] }), 1],
    ["oracleSAgg as text", withLayer({ oracleSAgg: "9" }), 1],
    ["cacheLoads longer than cacheRows", withLayer({ cacheLoads: [7, 2, 1] }), 1],
    [
      "oracleCacheLoads without cacheRows",
      withLayer({ cacheRows: undefined, cacheLoads: undefined }),
      1,
    ],
    [
      "oracleCacheLoads longer than oracleCacheRows",
      withLayer({ oracleCacheRows: [30], oracleCacheLoads: [6, 1.5] }),
      1,
    ],
    ["p99Predicted as text", withLayer({ p99Predicted: "25" }), 1],
    ["negative oraclePeak", withLayer({ oraclePeak: -1 }), 1],
    ["cacheLoadRecall above 1", { cacheLoadRecall: 2, layers: [MEASURED_LAYER] }, 1],
  ];
  for (const [name, value, nLayers] of bad) {
    assert.throws(
      () => parsePlanMeasurements(value, nLayers, "model.flm"),
      (e: unknown) =>
        e instanceof FlashlmError && e.kind === "format" && !e.message.includes("\n") &&
        e.message.startsWith("model.flm: predictor report: "),
      name,
    );
  }
});

Deno.test("the planner uses the load curves of the trained predictor or of the oracle, with their load recall", () => {
  const measured = { cacheLoadRecall: 0.9, layers: [MEASURED_LAYER, MEASURED_LAYER] };
  const trained = measuredPlanInputs(measured, "trained");
  assert.deepEqual(trained.windowStats?.sAgg, [MEASURED_LAYER.sAgg, MEASURED_LAYER.sAgg]);
  assert.deepEqual(trained.loadCurves?.[1], { rows: [32, 64], loads: [7, 2], minRows: 25 });
  assert.equal(trained.loadCurveRecall, 0.9);
  const oracle = measuredPlanInputs(measured, "oracle");
  assert.deepEqual(oracle.windowStats?.newPerToken[0], MEASURED_LAYER.oracleNewPerToken);
  assert.deepEqual(oracle.loadCurves?.[0], { rows: [32, 64], loads: [6, 1.5], minRows: 22 });
  assert.equal(oracle.loadCurveRecall, 1, "the oracle reads every neuron it predicts");
  // The oracle's curve may have its own store sizes.
  const ownRows = measuredPlanInputs(
    { layers: [{ ...MEASURED_LAYER, oracleCacheRows: [22, 64] }] },
    "oracle",
  );
  assert.deepEqual(ownRows.loadCurves?.[0], { rows: [22, 64], loads: [6, 1.5], minRows: 22 });
  // Without p99, the peak is the fewest rows; a layer without a curve leaves none.
  const peakOnly = measuredPlanInputs(
    { layers: [{ ...MEASURED_LAYER, p99Predicted: undefined }] },
    "trained",
  );
  assert.equal(peakOnly.loadCurves?.[0].minRows, 30);
  assert.equal(peakOnly.loadCurveRecall, 1, "curves of older files read every predicted neuron");
  const partial = measuredPlanInputs(
    { layers: [MEASURED_LAYER, { ...MEASURED_LAYER, cacheLoads: undefined }] },
    "trained",
  );
  assert.equal(partial.loadCurves, null);
  assert.deepEqual(measuredPlanInputs(null, "trained"), {
    windowStats: null,
    loadCurves: null,
    loadCurveRecall: 1,
  });
});

Deno.test("train-predictor stores load curves measured at the default load recall, and planFromFile refuses a malformed report", async () => {
  const dir = await tinyHfModel({ fc1Rank: 4 });
  const flm = `${dir}/m.flm`;
  await convertHfToFlash(dir, flm, { dtype: "f32" });
  const rng = new Rng(3);
  const windows = [...Array(6)].map(
    () => [2, ...[...Array(31)].map(() => 4 + Math.floor(rng.next() * 400))],
  );
  const report = await trainPredictor(flm, flm, { tokenWindows: windows, epochs: 3 });
  assert.equal(report.cacheLoadRecall, DEFAULT_LOAD_RECALL);
  const file = await FlashModelFile.open(flm);
  const measured = parsePlanMeasurements(file.header.predictor?.report, file.config.nLayers, flm);
  assert.equal(measured?.cacheLoadRecall, DEFAULT_LOAD_RECALL);
  for (const l of measured!.layers) {
    // The curves start at the fewest rows the planner gives a layer and end at every neuron.
    assert.equal(l.cacheRows?.[0], l.p99Predicted);
    assert.equal(l.oracleCacheRows?.[0], l.oracleP99);
    assert.equal(l.cacheRows?.at(-1), file.config.dFfn);
    assert.equal(l.oracleCacheRows?.at(-1), file.config.dFfn);
  }
  const plan = planFromFile(file, { memory: { kind: "ffn-percent", percent: 90 } }, 32);
  assert.equal(plan.loadCurveRecall, DEFAULT_LOAD_RECALL);
  assert.notEqual(plan.expectedLoadsPerToken, null);
  assert.match(describePlan(plan), /neurons read per token at load recall 0\.9/);

  // The same file with a report whose curve does not match its store sizes.
  const predictor = deserializePredictor(
    file.header.predictor!.meta,
    file.predictorBytes!,
    file.config.dModel,
    file.config.dFfn,
    file.config.nLayers,
    flm,
  );
  const broken = structuredClone(report);
  broken.layers[1].cacheLoads = broken.layers[1].cacheLoads!.slice(1);
  const { meta, bytes } = serializePredictor(predictor);
  await rewriteWithPredictor(file, `${dir}/broken.flm`, { meta, bytes, report: broken });
  const brokenFile = await FlashModelFile.open(`${dir}/broken.flm`);
  assert.throws(
    () => planFromFile(brokenFile, {}, 32),
    (e: unknown) =>
      e instanceof FlashlmError && e.kind === "format" &&
      e.message ===
        `${dir}/broken.flm: predictor report: layer 1: cacheLoads must be as long as cacheRows`,
  );
  await Deno.remove(dir, { recursive: true });
});
