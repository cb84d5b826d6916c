/**
 * The kernels Llama adds: the gated FFN over bundles (each tuned kernel against its plain
 * reference, every dtype and gate), grouped-query attention (tuned against naive, any
 * split of the heads), RoPE and RMSNorm; the three-part split layout.
 */

import { strict as assert } from "node:assert";
import { Rng } from "../core/sampler.ts";
import { attention, attentionHeads, attentionNaive } from "../kernels/attention.ts";
import { attentionF16, attentionF16Naive } from "../kernels/attention_f16.ts";
import { f32ToF16Bits } from "../kernels/f16.ts";
import {
  ffnGated,
  ffnGatedF16,
  ffnGatedF16Naive,
  ffnGatedI8,
  ffnGatedI8Naive,
  ffnGatedNaive,
  type GateActivation,
  gatedBundleBytes,
} from "../kernels/ffn_gated.ts";
import { quantizeRowsI8 } from "../kernels/matvec_i8.ts";
import { rmsNorm } from "../kernels/rmsnorm.ts";
import { applyRope, ropeTables } from "../kernels/rope.ts";
import { bundleMatrix, ffnBundles } from "../kernels/weights.ts";
import { bundlesToSplitBytes, splitToBundlesBytes } from "../core/flash_values.ts";

const GATES: GateActivation[] = [
  { kind: "silu", threshold: 0 },
  { kind: "relu", threshold: 0 },
  { kind: "fatrelu", threshold: 0.2 },
  { kind: "silu", threshold: 0.1 }, // CATS: |silu(g)| <= 0.1 skipped
];

function randomVector(rng: Rng, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => scale * rng.normal());
}

function closeTo(a: Float32Array, b: Float32Array, tolerance: number, what: string): void {
  for (let i = 0; i < a.length; i++) {
    assert.ok(
      Math.abs(a[i] - b[i]) <= tolerance * (1 + Math.abs(b[i])),
      `${what}[${i}]: ${a[i]} vs ${b[i]}`,
    );
  }
}

// ---------------------------------------------------------------------------
// The gated FFN

Deno.test("the tuned gated FFN kernels equal their plain references for f32, f16 and int8 and every gate", () => {
  const rng = new Rng(7);
  for (const gate of GATES) {
    for (const [d, rows] of [[7, 9], [12, 33], [64, 50]]) {
      const x = randomVector(rng, d);
      const values = randomVector(rng, rows * 3 * d, 1 / Math.sqrt(d)); // (rows, 3d) [gate | up | down]
      const want = new Float32Array(d), got = new Float32Array(d);
      const actWant = new Float32Array(rows), actGot = new Float32Array(rows);
      const what = `${gate.kind} d=${d}`;

      const n = ffnGatedNaive(want, values, x, rows, d, gate, actWant);
      assert.equal(ffnGated(got, values, x, rows, d, gate, actGot), n, `${what} f32 active rows`);
      closeTo(got, want, 1e-5, `${what} f32 out`);
      closeTo(actGot, actWant, 1e-5, `${what} f32 act`);
      if (gate.kind !== "silu") assert.ok(n < rows, `${what}: some gates are zero`);

      const half = Uint16Array.from(values, f32ToF16Bits);
      const nHalf = ffnGatedF16Naive(want, half, x, rows, d, gate, actWant);
      assert.equal(
        ffnGatedF16(got, half, x, rows, d, gate, actGot),
        nHalf,
        `${what} f16 active rows`,
      );
      closeTo(got, want, 1e-5, `${what} f16 out`);
      closeTo(actGot, actWant, 1e-5, `${what} f16 act`);

      if (d % 4 !== 0) continue;
      const bytes = new ArrayBuffer(rows * gatedBundleBytes("int8", d));
      const q = new Int8Array(bytes), s = new Float32Array(bytes);
      for (let p = 0; p < 3 * rows; p++) {
        quantizeRowsI8(values, p * d, 1, d, q, p * (d + 4), s, (p * (d + 4) + d) / 4);
      }
      const nI8 = ffnGatedI8Naive(want, q, s, x, rows, d, gate, actWant);
      assert.equal(
        ffnGatedI8(got, q, s, x, rows, d, gate, actGot),
        nI8,
        `${what} int8 active rows`,
      );
      closeTo(got, want, 1e-5, `${what} int8 out`);
      closeTo(actGot, actWant, 1e-5, `${what} int8 act`);
      // the bundle dispatch picks the gated kernel of each dtype
      const m = bundleMatrix("int8", d, new Uint8Array(bytes), gate);
      ffnBundles(got, m, new Float32Array(rows), x, rows);
      closeTo(got, want, 1e-5, `${what} ffnBundles int8`);
    }
  }
});

Deno.test("a ReLU-gated FFN's zero gates contribute nothing: the kernel over the active rows alone gives the same output", () => {
  const rng = new Rng(3);
  const d = 16, rows = 40;
  const gate: GateActivation = { kind: "relu", threshold: 0 };
  const x = randomVector(rng, d);
  const values = randomVector(rng, rows * 3 * d);
  const all = new Float32Array(d), act = new Float32Array(rows);
  ffnGated(all, values, x, rows, d, gate, act);
  const active = [...act.keys()].filter((r) => act[r] !== 0);
  const kept = new Float32Array(active.length * 3 * d);
  active.forEach((r, i) => kept.set(values.subarray(r * 3 * d, (r + 1) * 3 * d), i * 3 * d));
  const some = new Float32Array(d);
  ffnGated(some, kept, x, active.length, d, gate);
  closeTo(some, all, 1e-6, "active rows only");
});

// ---------------------------------------------------------------------------
// Grouped-query attention

Deno.test("grouped-query attention: tuned equals naive for 1, 2 and 4 query heads per KV head, f32 and f16 caches", () => {
  const rng = new Rng(11);
  const nHeads = 4, headDim = 6;
  for (const nKv of [4, 2, 1]) {
    for (const t of [1, 5, 9]) {
      const q = randomVector(rng, nHeads * headDim);
      const k = randomVector(rng, t * nKv * headDim), v = randomVector(rng, t * nKv * headDim);
      const want = new Float32Array(nHeads * headDim), got = new Float32Array(nHeads * headDim);
      const scores = new Float32Array(t), scale = 1 / Math.sqrt(headDim);
      attentionNaive(want, q, k, v, scores, nHeads, headDim, t, scale, nKv);
      attention(got, q, k, v, scores, nHeads, headDim, t, scale, nKv);
      closeTo(got, want, 1e-5, `f32 nKv=${nKv} t=${t}`);
      // heads computed in two ranges give the same bits as all at once
      const parts = new Float32Array(nHeads * headDim);
      attentionHeads(parts, q, k, v, scores, nHeads, headDim, t, scale, 0, 1, nKv);
      attentionHeads(parts, q, k, v, scores, nHeads, headDim, t, scale, 1, nHeads, nKv);
      assert.deepEqual(parts, got);
      // query head h of a group sees its KV head: with one head per group it is plain MHA
      // over the KV heads repeated
      const rep = nHeads / nKv;
      const kFull = new Float32Array(t * nHeads * headDim),
        vFull = new Float32Array(t * nHeads * headDim);
      for (let j = 0; j < t; j++) {
        for (let h = 0; h < nHeads; h++) {
          const from = (j * nKv + Math.floor(h / rep)) * headDim;
          kFull.set(k.subarray(from, from + headDim), (j * nHeads + h) * headDim);
          vFull.set(v.subarray(from, from + headDim), (j * nHeads + h) * headDim);
        }
      }
      attentionNaive(parts, q, kFull, vFull, scores, nHeads, headDim, t, scale);
      closeTo(parts, want, 1e-6, `repeat_kv nKv=${nKv}`);
      const k16 = Uint16Array.from(k, f32ToF16Bits), v16 = Uint16Array.from(v, f32ToF16Bits);
      attentionF16Naive(want, q, k16, v16, scores, nHeads, headDim, t, scale, nKv);
      attentionF16(got, q, k16, v16, scores, nHeads, headDim, t, scale, nKv);
      closeTo(got, want, 1e-5, `f16 nKv=${nKv} t=${t}`);
    }
  }
});

// ---------------------------------------------------------------------------
// RoPE and RMSNorm

Deno.test("RoPE rotates each pair (i, i + headDim/2) by the position times its frequency", () => {
  const headDim = 8, tables = ropeTables(10, headDim, 10000, null);
  const x = Float32Array.from({ length: 2 * headDim }, (_, i) => i - 5); // two heads
  const before = x.slice();
  applyRope(x, tables, 7, 2);
  for (let h = 0; h < 2; h++) {
    for (let i = 0; i < headDim / 2; i++) {
      const angle = 7 / Math.pow(10000, (2 * i) / headDim);
      const a = before[h * headDim + i], b = before[h * headDim + i + headDim / 2];
      assert.ok(Math.abs(x[h * headDim + i] - (a * Math.cos(angle) - b * Math.sin(angle))) < 1e-5);
      assert.ok(
        Math.abs(x[h * headDim + i + headDim / 2] - (b * Math.cos(angle) + a * Math.sin(angle))) <
          1e-5,
      );
    }
  }
  applyRope(before, tables, 0, 2);
  assert.deepEqual(
    [...before],
    Array.from({ length: 16 }, (_, i) => i - 5),
    "position 0 is the identity",
  );
});

Deno.test("RMSNorm divides by the root mean square and scales by the weight", () => {
  const x = new Float32Array([1, -2, 3, -4]);
  const out = new Float32Array(4);
  rmsNorm(out, x, new Float32Array([1, 2, 1, 0.5]), 4, 1e-6);
  const rms = Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-6);
  closeTo(out, new Float32Array([1 / rms, -4 / rms, 3 / rms, -2 / rms]), 1e-6, "rmsnorm");
});

// ---------------------------------------------------------------------------
// Layout and format

Deno.test("the split layout of three-part bundles puts every gate, then every up, then every down part together", () => {
  const dFfn = 3, part = 2;
  const bundles = Uint8Array.from({ length: dFfn * 3 * part }, (_, i) => i); // bundle i = parts 3i, 3i+1, 3i+2
  const split = new Uint8Array(bundles.length);
  bundlesToSplitBytes(bundles, split, dFfn, part, 3);
  assert.deepEqual([...split], [0, 1, 6, 7, 12, 13, 2, 3, 8, 9, 14, 15, 4, 5, 10, 11, 16, 17]);
  const back = new Uint8Array(bundles.length);
  splitToBundlesBytes(split, back, dFfn, part, 3);
  assert.deepEqual(back, bundles);
});
