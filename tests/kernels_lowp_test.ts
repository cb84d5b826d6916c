// Tests of the 16-bit and int8 kernels: each tuned kernel against its plain reference on
// random data with tail shapes, and each against the float32 kernel on the same weights
// decoded (f16) or dequantized (int8), so the low-precision path computes the same layer.

import { strict as assert } from "node:assert";
import { Rng } from "../core/sampler.ts";
import { f16ToF32, f32ToF16 } from "../kernels/f16.ts";
import { ffnBundled, ffnBundledNaive } from "../kernels/ffn_bundled.ts";
import { ffnBundledF16, ffnBundledF16Naive } from "../kernels/ffn_bundled_f16.ts";
import { ffnBundledI8, ffnBundledI8Naive, i8BundleBytes } from "../kernels/ffn_bundled_i8.ts";
import { matvecNaive } from "../kernels/matvec.ts";
import { matvecF16, matvecF16Naive } from "../kernels/matvec_f16.ts";
import { matvecI8, matvecI8Naive, quantizeRowsI8 } from "../kernels/matvec_i8.ts";

// ---------------------------------------------------------------------------
// Helpers

function uniform(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (2 * rng.next() - 1) * scale;
  return a;
}

function assertClose(a: Float32Array, b: Float32Array, tol: number, what: string): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    const err = Math.abs(a[i] - b[i]);
    assert(err <= tol * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

const SHAPES: [number, number][] = [[1, 1], [3, 5], [4, 4], [5, 8], [7, 13], [16, 64], [33, 128], [
  33,
  130,
]];

// ---------------------------------------------------------------------------
// f16

Deno.test("matvecF16 equals its reference and the f32 matvec on the decoded weights", () => {
  const rng = new Rng(1);
  for (const [rows, cols] of SHAPES) {
    const wHalf = new Uint16Array(rows * cols); // (rows, cols)
    f32ToF16(uniform(rng, rows * cols), wHalf);
    const wFloat = new Float32Array(rows * cols); // (rows, cols)
    f16ToF32(wHalf, wFloat);
    const x = uniform(rng, cols), bias = uniform(rng, rows);
    const fast = new Float32Array(rows), ref = new Float32Array(rows), f32 = new Float32Array(rows);
    matvecF16(fast, wHalf, x, rows, cols, bias);
    matvecF16Naive(ref, wHalf, x, rows, cols, bias);
    matvecNaive(f32, wFloat, x, rows, cols, bias);
    assertClose(fast, ref, 1e-6, `${rows}x${cols} tuned vs reference`);
    // The same weights 2 bytes into a buffer: rows off 4-byte boundaries take the one-word path.
    const shifted = new Uint16Array(rows * cols + 1).subarray(1);
    shifted.set(wHalf);
    const unaligned = new Float32Array(rows);
    matvecF16(unaligned, shifted, x, rows, cols, bias);
    assert.deepEqual(unaligned, fast, `${rows}x${cols} from an unaligned view`);
    assert.deepEqual(ref, f32, `${rows}x${cols}: same sums as f32 on the same values`);
  }
});

Deno.test("ffnBundledF16 equals its reference and the f32 kernel on the decoded bundles", () => {
  const rng = new Rng(2);
  for (const [numRows, d] of SHAPES) {
    const half = new Uint16Array(numRows * 2 * d); // (numRows, 2d)
    f32ToF16(uniform(rng, numRows * 2 * d), half);
    const float = new Float32Array(half.length);
    f16ToF32(half, float);
    const x = uniform(rng, d), bias = uniform(rng, numRows, 0.5);
    const outs = [0, 1, 2].map(() => new Float32Array(d));
    const acts = [0, 1, 2].map(() => new Float32Array(numRows));
    const n0 = ffnBundledF16(outs[0], half, bias, x, numRows, d, acts[0]);
    const n1 = ffnBundledF16Naive(outs[1], half, bias, x, numRows, d, acts[1]);
    const n2 = ffnBundledNaive(outs[2], float, bias, x, numRows, d, acts[2]);
    assert(n0 === n1 && n1 === n2, `${numRows}x${d}: active ${n0} ${n1} ${n2}`);
    assertClose(outs[0], outs[1], 1e-5, `${numRows}x${d} tuned vs reference`);
    assert.deepEqual(outs[1], outs[2], `${numRows}x${d}: same sums as f32`);
    assert.deepEqual(acts[1], acts[2]);
  }
});

// ---------------------------------------------------------------------------
// int8

Deno.test("quantizeRowsI8 keeps every weight within half a step of its row's scale", () => {
  const rng = new Rng(3);
  const rows = 9, cols = 37;
  const w = uniform(rng, rows * cols, 3);
  w.fill(0, 2 * cols, 3 * cols); // an all-zero row
  const q = new Int8Array(rows * cols), scales = new Float32Array(rows);
  assert.equal(quantizeRowsI8(w, 0, rows, cols, q, 0, scales, 0), -1);
  assert.equal(scales[2], 0);
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(w[r * cols + c]));
    assert(Math.abs(scales[r] - max / 127) <= 1e-6 * max, `row ${r} scale`);
    for (let c = 0; c < cols; c++) {
      const err = Math.abs(q[r * cols + c] * scales[r] - w[r * cols + c]);
      assert(err <= scales[r] / 2 + 1e-7, `w[${r},${c}] off by ${err}`);
    }
  }
  w[5 * cols + 4] = Infinity;
  assert.equal(quantizeRowsI8(w, 0, rows, cols, q, 0, scales, 0), 5 * cols + 4);
});

Deno.test("matvecI8 equals its reference and the f32 matvec on the dequantized weights", () => {
  const rng = new Rng(4);
  for (const [rows, cols] of SHAPES) {
    const w = uniform(rng, rows * cols);
    const q = new Int8Array(rows * cols), scales = new Float32Array(rows);
    quantizeRowsI8(w, 0, rows, cols, q, 0, scales, 0);
    const deq = new Float32Array(rows * cols);
    for (let i = 0; i < deq.length; i++) deq[i] = q[i] * scales[Math.floor(i / cols)];
    const x = uniform(rng, cols), bias = uniform(rng, rows);
    const fast = new Float32Array(rows), ref = new Float32Array(rows), f32 = new Float32Array(rows);
    matvecI8(fast, q, scales, x, rows, cols, bias);
    matvecI8Naive(ref, q, scales, x, rows, cols, bias);
    matvecNaive(f32, deq, x, rows, cols, bias);
    assertClose(fast, ref, 1e-6, `${rows}x${cols} tuned vs reference`);
    assertClose(ref, f32, 1e-5, `${rows}x${cols} vs dequantized f32`);
  }
});

Deno.test("ffnBundledI8 equals its reference and the f32 kernel on dequantized bundles", () => {
  const rng = new Rng(5);
  for (const [numRows, d] of [[1, 4], [3, 8], [4, 16], [7, 20], [33, 64]]) {
    const stride = i8BundleBytes(d);
    const bytes = new ArrayBuffer(numRows * stride); // (numRows, 2d + 8)
    const q = new Int8Array(bytes), s = new Float32Array(bytes);
    const float = new Float32Array(numRows * 2 * d); // (numRows, 2d) dequantized
    const scale = new Float32Array(1);
    for (let r = 0; r < numRows; r++) {
      for (let half = 0; half < 2; half++) {
        const values = uniform(rng, d);
        const at = r * stride + half * (d + 4); // this half: d values, then the scale
        quantizeRowsI8(values, 0, 1, d, q, at, scale, 0);
        s[(at + d) / 4] = scale[0];
        for (let i = 0; i < d; i++) float[r * 2 * d + half * d + i] = q[at + i] * scale[0];
      }
    }
    const x = uniform(rng, d), bias = uniform(rng, numRows, 0.3);
    const outs = [0, 1, 2].map(() => new Float32Array(d));
    const n0 = ffnBundledI8(outs[0], q, s, bias, x, numRows, d);
    const n1 = ffnBundledI8Naive(outs[1], q, s, bias, x, numRows, d);
    const n2 = ffnBundled(outs[2], float, bias, x, numRows, d);
    assert(n0 === n1 && n1 === n2, `${numRows}x${d}: active ${n0} ${n1} ${n2}`);
    assertClose(outs[0], outs[1], 1e-5, `${numRows}x${d} tuned vs reference`);
    assertClose(outs[1], outs[2], 1e-4, `${numRows}x${d} vs dequantized f32`);
  }
});
