import { strict as assert } from "node:assert";
import { CacheCurveAccumulator, FrequencyScores } from "../core/window.ts";
import { planMemory } from "../core/memory_plan.ts";
import type { ModelConfig } from "../core/config.ts";
import { Rng } from "../core/sampler.ts";

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

Deno.test("load curves: no rows to spare reads what the previous token lacked, all rows only first uses", () => {
  const rng = new Rng(9);
  const numNeurons = 50;
  const acc = new CacheCurveAccumulator(numNeurons, [0, 10, numNeurons]);
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
  let previousMisses = 0;
  const seen = new Set<number>();
  let firstUses = 0;
  for (let t = 0; t < sets.length; t++) {
    const prev = new Set(t > 0 ? sets[t - 1] : []);
    for (const n of sets[t]) {
      if (!prev.has(n)) previousMisses++;
      if (!seen.has(n)) firstUses++;
      seen.add(n);
    }
  }
  assert.equal(r.loadsPerToken[0], previousMisses / sets.length, "a store of a token's size");
  assert.equal(r.loadsPerToken[2], firstUses / sets.length, "a store of every neuron");
  assert.ok(r.loadsPerToken[1] < r.loadsPerToken[0] && r.loadsPerToken[1] > r.loadsPerToken[2]);
  assert.equal(r.peak, Math.max(...sets.map((s) => s.length)));
  const sizes = sets.map((s) => s.length).sort((a, b) => a - b);
  assert.equal(r.p99, sizes[Math.ceil(0.99 * sizes.length) - 1], "the 99th percentile set size");
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
