// Tests of kernels/: each tuned kernel against its naive reference on random data with odd
// (tail) shapes, and the reference kernels against independent computations.

import assert from "node:assert";
import {
  attention,
  attentionNaive,
  bf16ToF32,
  f16BitsToF32,
  f16ToF32,
  f16ToF32At,
  f16ToF32Naive,
  f32ToBf16,
  f32ToF16,
  f32ToF16Bits,
  ffnBundled,
  ffnBundledNaive,
  gelu,
  geluNaive,
  layerNorm,
  layerNormNaive,
  matvec,
  matvecNaive,
  relu,
  reluNaive,
  softmax,
  softmaxNaive,
} from "../kernels/mod.ts";

// ---------------------------------------------------------------------------
// Helpers

// Deterministic uniform [lo, hi) numbers (xorshift32), so failures reproduce.
function makeRandom(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0 || 1;
  return (lo = -1, hi = 1) => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return lo + ((s >>> 0) / 2 ** 32) * (hi - lo);
  };
}

function randomArray(rand: () => number, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rand();
  return a;
}

// Every element within tolerance * scale[i] (scale defaults to max(1, |expected[i]|)).
function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  n: number,
  tolerance: number = 1e-5,
  scale?: ArrayLike<number>,
): void {
  for (let i = 0; i < n; i++) {
    const s = scale ? scale[i] : Math.max(1, Math.abs(expected[i]));
    const diff = Math.abs(actual[i] - expected[i]);
    if (!(diff <= tolerance * s)) {
      assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (scale ${s})`);
    }
  }
}

// The 65536 16-bit patterns 0..65535.
function allBitPatterns(): Uint16Array {
  const bits = new Uint16Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = h;
  return bits;
}

// One float32 from its bits, and back (via a DataView, independent of the kernels).
const view = new DataView(new ArrayBuffer(4));
function f32FromBits(bits: number): number {
  view.setUint32(0, bits >>> 0);
  return view.getFloat32(0);
}
function bitsOfF32(x: number): number {
  view.setFloat32(0, x);
  return view.getUint32(0);
}

const isF16NaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (b: number): boolean => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;

// ---------------------------------------------------------------------------
// f16 and bf16

Deno.test("f16ToF32 equals f16ToF32Naive on all 65536 bit patterns", () => {
  const bits = allBitPatterns();
  const viaTable = new Float32Array(65536);
  const viaBits = new Float32Array(65536);
  f16ToF32(bits, viaTable);
  f16ToF32Naive(bits, viaBits);
  for (let h = 0; h < 65536; h++) {
    const same = Object.is(viaTable[h], viaBits[h]) ||
      (Number.isNaN(viaTable[h]) && Number.isNaN(viaBits[h]));
    assert(same, `bits 0x${h.toString(16)}: ${viaTable[h]} vs ${viaBits[h]}`);
  }
});

Deno.test("f16ToF32At equals f16ToF32 on a slice, and writes nothing else", () => {
  const rand = makeRandom(14);
  const src = new Uint16Array(100);
  for (let i = 0; i < src.length; i++) src[i] = Math.floor(rand(0, 0x7c00)); // finite, positive
  const expected = new Float32Array(37);
  f16ToF32(src.subarray(41, 78), expected);
  const dst = new Float32Array(60).fill(-1);
  f16ToF32At(src, 41, dst, 9, 37);
  assert.deepEqual(Array.from(dst.subarray(9, 46)), Array.from(expected));
  assert(dst.subarray(0, 9).every((v) => v === -1) && dst.subarray(46).every((v) => v === -1));
});

Deno.test("f16ToF32Naive equals Float16Array on all 65536 bit patterns", () => {
  const bits = allBitPatterns();
  const oracle = new Float16Array(bits.buffer);
  const decoded = new Float32Array(65536);
  f16ToF32Naive(bits, decoded);
  for (let h = 0; h < 65536; h++) {
    if (isF16NaN(h)) {
      assert(Number.isNaN(decoded[h]), `bits 0x${h.toString(16)} must decode to NaN`);
      assert(Number.isNaN(f16BitsToF32(h)));
    } else {
      assert(Object.is(decoded[h], oracle[h]), `bits 0x${h.toString(16)}: ${decoded[h]}`);
      assert(Object.is(f16BitsToF32(h), oracle[h]));
    }
  }
});

Deno.test("f32ToF16 inverts f16ToF32 on every non-NaN half", () => {
  const bits = allBitPatterns();
  const decoded = new Float32Array(65536);
  f16ToF32(bits, decoded);
  const encoded = new Uint16Array(65536);
  f32ToF16(decoded, encoded);
  for (let h = 0; h < 65536; h++) {
    if (isF16NaN(h)) {
      assert(isF16NaN(encoded[h]), `NaN 0x${h.toString(16)} must stay NaN`);
      assert.equal(encoded[h] & 0x8000, h & 0x8000, "NaN keeps its sign");
    } else {
      assert.equal(encoded[h], h, `bits 0x${h.toString(16)} -> ${decoded[h]} -> ${encoded[h]}`);
    }
  }
});

Deno.test("f32ToF16 rounds halfway cases to even, like DataView.setFloat16", () => {
  const oracleView = new DataView(new ArrayBuffer(2));
  const oracle = (x: number): number => {
    oracleView.setFloat16(0, x);
    return oracleView.getUint16(0);
  };
  // Between each pair of neighbouring finite non-negative halves h and h+1: the exact
  // midpoint (a tie) and the float32 values just below and above it.
  const values: number[] = [];
  const expectTie: number[] = [];
  for (let h = 0; h < 0x7c00; h++) {
    const lo = f16BitsToF32(h);
    const hi = h + 1 === 0x7c00 ? 65536 : f16BitsToF32(h + 1); // 65536: where infinity "is"
    const mid = (lo + hi) / 2; // exact in float32: needs only 12 significant bits
    assert.equal(Math.fround(mid), mid);
    const midBits = bitsOfF32(mid);
    for (const x of [mid, f32FromBits(midBits - 1), f32FromBits(midBits + 1)]) {
      values.push(x, -x);
    }
    expectTie.push(mid, (h & 1) === 0 ? h : h + 1); // the even neighbour wins a tie
  }
  const src = new Float32Array(values);
  const dst = new Uint16Array(src.length);
  f32ToF16(src, dst);
  for (let i = 0; i < src.length; i++) {
    assert.equal(dst[i], oracle(src[i]), `${src[i]} -> 0x${dst[i].toString(16)}`);
    assert.equal(f32ToF16Bits(src[i]), dst[i]);
  }
  for (let i = 0; i < expectTie.length; i += 2) {
    assert.equal(f32ToF16Bits(expectTie[i]), expectTie[i + 1], `tie at ${expectTie[i]}`);
  }
});

Deno.test("f32ToF16 matches DataView.setFloat16 on random float32 bit patterns", () => {
  const rand = makeRandom(7);
  const n = 200_000;
  const src = new Float32Array(n);
  for (let i = 0; i < n; i++) src[i] = f32FromBits(Math.floor(rand(0, 2 ** 32)));
  const dst = new Uint16Array(n);
  f32ToF16(src, dst);
  const oracleView = new DataView(new ArrayBuffer(2));
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(src[i])) {
      assert(isF16NaN(dst[i]), `NaN must stay NaN, got 0x${dst[i].toString(16)}`);
    } else {
      oracleView.setFloat16(0, src[i]);
      assert.equal(dst[i], oracleView.getUint16(0), `${src[i]}`);
    }
  }
});

Deno.test("f32ToF16 sends overflow to infinity and keeps signed zeros, subnormals and NaN", () => {
  const src = new Float32Array([1e6, -1e6, Infinity, -Infinity, 0, -0, 2 ** -24, -(2 ** -25), NaN]);
  const dst = new Uint16Array(src.length);
  f32ToF16(src, dst);
  const back = new Float32Array(src.length);
  f16ToF32(dst, back);
  assert.deepEqual(Array.from(back.subarray(0, 4)), [Infinity, -Infinity, Infinity, -Infinity]);
  assert(Object.is(back[4], 0) && Object.is(back[5], -0));
  assert.equal(back[6], 2 ** -24); // the smallest subnormal survives
  assert(Object.is(back[7], -0)); // a tie between 0 and the smallest subnormal goes to even 0
  assert(Number.isNaN(back[8]));
});

Deno.test("f32ToBf16 inverts bf16ToF32 on every non-NaN bfloat16", () => {
  const bits = allBitPatterns();
  const decoded = new Float32Array(65536);
  bf16ToF32(bits, decoded);
  const encoded = new Uint16Array(65536);
  f32ToBf16(decoded, encoded);
  for (let b = 0; b < 65536; b++) {
    // independent decode: a bfloat16 is the top half of a float32
    const value = f32FromBits(b << 16);
    if (isBf16NaN(b)) {
      assert(Number.isNaN(decoded[b]));
      assert(isBf16NaN(encoded[b]), `NaN 0x${b.toString(16)} must stay NaN`);
    } else {
      assert(Object.is(decoded[b], value), `bits 0x${b.toString(16)}`);
      assert.equal(encoded[b], b, `bits 0x${b.toString(16)}`);
    }
  }
});

Deno.test("f32ToBf16 rounds to the nearer bfloat16, ties to even", () => {
  // The value of a finite bfloat16 pattern; the all-ones exponent stands for 2^128, the
  // first value past the largest finite one (rounding with an unbounded exponent).
  const bf16Value = (b: number): number =>
    (b & 0x7fff) === 0x7f80 ? ((b & 0x8000) ? -(2 ** 128) : 2 ** 128) : f32FromBits(b << 16);
  const rand = makeRandom(11);
  const values: number[] = [f32FromBits(0x7f7f8000), f32FromBits(0x7f7f7fff)]; // at the top
  for (let i = 0; i < 20_000; i++) {
    let top = 0; // sign, exponent and 7 mantissa bits of a finite float32
    do top = Math.floor(rand(0, 65536)); while ((top & 0x7f80) === 0x7f80);
    values.push(f32FromBits(((top << 16) | Math.floor(rand(0, 65536))) >>> 0)); // random low half
    values.push(f32FromBits(((top << 16) | 0x8000) >>> 0)); // exact tie
  }
  const src = new Float32Array(values);
  const dst = new Uint16Array(src.length);
  f32ToBf16(src, dst);
  for (let i = 0; i < src.length; i++) {
    const x = src[i];
    const down = bitsOfF32(x) >>> 16; // truncation toward zero
    const up = down + 1; // next bfloat16 away from zero
    const distDown = Math.abs(x - bf16Value(down));
    const distUp = Math.abs(bf16Value(up) - x);
    const expected = distDown < distUp
      ? down
      : distUp < distDown
      ? up
      : (down & 1) === 0
      ? down
      : up;
    assert.equal(dst[i], expected, `${x} (bits 0x${bitsOfF32(x).toString(16)})`);
  }
});

// ---------------------------------------------------------------------------
// matvec

Deno.test("matvec equals matvecNaive on odd shapes, with and without bias", () => {
  const rand = makeRandom(1);
  const shapes = [[1, 1], [1, 7], [3, 5], [4, 4], [5, 3], [8, 9], [17, 33], [64, 130]];
  for (const [rows, cols] of shapes) {
    const w = randomArray(rand, rows * cols); // (rows, cols)
    const x = randomArray(rand, cols); // (cols)
    const bias = randomArray(rand, rows); // (rows)
    for (const b of [bias, null]) {
      const expected = new Float32Array(rows + 1).fill(42); // one extra slot that must stay
      const actual = new Float32Array(rows + 1).fill(42);
      matvecNaive(expected, w, x, rows, cols, b);
      matvec(actual, w, x, rows, cols, b);
      assertClose(`matvec ${rows}x${cols} bias=${b !== null}`, actual, expected, rows + 1);
      assert.equal(actual[rows], 42, "matvec must not write past rows");
    }
  }
});

Deno.test("matvecNaive computes a hand-checked product", () => {
  const w = new Float32Array([1, 2, 3, 4, 5, 6]); // (2, 3)
  const x = new Float32Array([1, 0, -1]);
  const out = new Float32Array(2);
  matvecNaive(out, w, x, 2, 3, new Float32Array([0.5, -0.5]));
  assert.deepEqual(Array.from(out), [1 - 3 + 0.5, 4 - 6 - 0.5]);
});

// ---------------------------------------------------------------------------
// layer norm

Deno.test("layerNorm equals layerNormNaive on odd lengths, large offsets and in place", () => {
  const rand = makeRandom(2);
  for (const n of [1, 2, 3, 5, 7, 64, 771]) {
    for (const offset of [0, 1000, -30000]) {
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = offset + rand(-2, 2);
      const gamma = randomArray(rand, n);
      const beta = randomArray(rand, n);
      const expected = new Float32Array(n);
      layerNormNaive(expected, x, gamma, beta, n);
      const actual = new Float32Array(n);
      layerNorm(actual, x, gamma, beta, n);
      assertClose(`layerNorm n=${n} offset=${offset}`, actual, expected, n);
      layerNorm(x, x, gamma, beta, n); // out aliases x
      assertClose(`layerNorm in place n=${n}`, x, expected, n);
    }
  }
});

Deno.test("layerNorm output has mean 0 and variance 1 with unit gamma and zero beta", () => {
  const rand = makeRandom(3);
  const n = 768;
  const gamma = new Float32Array(n).fill(1);
  const beta = new Float32Array(n);
  for (const kernel of [layerNormNaive, layerNorm]) {
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = 5 + rand(-3, 3);
    const out = new Float32Array(n);
    kernel(out, x, gamma, beta, n);
    let mean = 0;
    for (let i = 0; i < n; i++) mean += out[i];
    mean /= n;
    let variance = 0;
    for (let i = 0; i < n; i++) variance += (out[i] - mean) ** 2;
    variance /= n;
    assert(Math.abs(mean) < 1e-5, `${kernel.name}: mean ${mean}`);
    assert(Math.abs(variance - 1) < 1e-4, `${kernel.name}: variance ${variance}`);
  }
});

// ---------------------------------------------------------------------------
// softmax

Deno.test("softmax equals softmaxNaive on odd lengths and large logits", () => {
  const rand = makeRandom(4);
  for (const n of [1, 2, 3, 5, 7, 100, 1001]) {
    for (const spread of [1, 100]) {
      const x = new Float32Array(n + 1);
      for (let i = 0; i < n; i++) x[i] = rand(-spread, spread) + 50;
      x[n] = 42; // past n: must stay
      const expected = x.slice();
      softmaxNaive(expected, n);
      softmax(x, n);
      assertClose(`softmax n=${n} spread=${spread}`, x, expected, n + 1);
      assert.equal(x[n], 42, "softmax must not write past n");
    }
  }
});

Deno.test("softmax output is positive and sums to 1, even for huge logits", () => {
  const rand = makeRandom(5);
  for (const kernel of [softmaxNaive, softmax]) {
    for (const spread of [1, 1000]) {
      const n = 513;
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = rand(-spread, spread) + 1e4;
      kernel(x, n);
      let sum = 0;
      for (let i = 0; i < n; i++) {
        assert(x[i] >= 0 && x[i] <= 1, `${kernel.name}: element ${i} is ${x[i]}`);
        sum += x[i];
      }
      assert(Math.abs(sum - 1) < 1e-5, `${kernel.name}: sum ${sum}`);
    }
  }
});

// ---------------------------------------------------------------------------
// activations

Deno.test("relu equals reluNaive exactly on odd lengths, zeros and NaN", () => {
  const rand = makeRandom(6);
  for (const n of [1, 2, 3, 5, 7, 100, 1003]) {
    const x = randomArray(rand, n + 1);
    x[0] = -0;
    if (n > 2) x[2] = NaN;
    x[n] = -42; // past n: must stay
    const expected = x.slice();
    reluNaive(expected, n);
    relu(x, n);
    for (let i = 0; i <= n; i++) {
      const same = Object.is(x[i], expected[i]) ||
        (Number.isNaN(x[i]) && Number.isNaN(expected[i]));
      assert(same, `relu n=${n}: element ${i} is ${x[i]}, expected ${expected[i]}`);
    }
    for (let i = 0; i < n; i++) assert(!(expected[i] < 0), "reluNaive leaves no negative");
    assert.equal(x[n], -42, "relu must not write past n");
  }
});

Deno.test("gelu equals geluNaive on odd lengths and a wide range", () => {
  const rand = makeRandom(8);
  for (const n of [1, 2, 3, 5, 7, 100, 1003]) {
    const x = new Float32Array(n + 1);
    for (let i = 0; i < n; i++) x[i] = rand(-12, 12);
    x[n] = -42; // past n: must stay
    const expected = x.slice();
    geluNaive(expected, n);
    gelu(x, n);
    const scale = new Float32Array(n + 1).fill(1);
    assertClose(`gelu n=${n}`, x, expected, n + 1, 1e-6, scale);
    assert.equal(x[n], -42, "gelu must not write past n");
  }
});

Deno.test("geluNaive follows the tanh formula of gelu_new", () => {
  const xs = [-3, -1, -0.5, 0, 0.5, 1, 3];
  const x = new Float32Array(xs);
  geluNaive(x, xs.length);
  const expected = xs.map((v) => {
    const u = Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3);
    return (v * (1 + Math.tanh(u))) / 2;
  });
  assertClose("geluNaive", x, expected, xs.length, 1e-6);
  assert.equal(x[3], 0);
  assert(x[0] < 0 && x[0] > -0.01, "gelu(-3) is a small negative number");
});

// ---------------------------------------------------------------------------
// attention

Deno.test("attention equals attentionNaive on odd shapes and ignores rows past t", () => {
  const rand = makeRandom(9);
  const shapes = [[1, 1, 1], [1, 3, 2], [3, 5, 7], [2, 64, 9], [4, 3, 13], [12, 8, 33]];
  for (const [nHeads, headDim, t] of shapes) {
    const dim = nHeads * headDim;
    const maxT = t + 3;
    const q = randomArray(rand, dim); // (dim)
    const kCache = randomArray(rand, maxT * dim).fill(NaN, t * dim); // (maxT, dim), rows >= t invalid
    const vCache = randomArray(rand, maxT * dim).fill(NaN, t * dim); // (maxT, dim)
    const scale = 1 / Math.sqrt(headDim);
    const expected = new Float32Array(dim);
    attentionNaive(expected, q, kCache, vCache, new Float32Array(t), nHeads, headDim, t, scale);
    const actual = new Float32Array(dim).fill(NaN); // out is overwritten
    attention(actual, q, kCache, vCache, new Float32Array(t), nHeads, headDim, t, scale);
    assertClose(`attention ${nHeads}x${headDim} t=${t}`, actual, expected, dim);
  }
});

Deno.test("attention over one position returns that position's value", () => {
  const rand = makeRandom(10);
  const nHeads = 3, headDim = 5, dim = nHeads * headDim;
  const q = randomArray(rand, dim);
  const kCache = randomArray(rand, 4 * dim); // (4, dim), only row 0 valid
  const vCache = randomArray(rand, 4 * dim); // (4, dim)
  for (const kernel of [attentionNaive, attention]) {
    const out = new Float32Array(dim);
    kernel(out, q, kCache, vCache, new Float32Array(1), nHeads, headDim, 1, 0.5);
    assert.deepEqual(Array.from(out), Array.from(vCache.subarray(0, dim)), kernel.name);
  }
});

Deno.test("attention averages the values of keys with equal scores", () => {
  // 2 heads of size 2; head 0 sees equal scores for both positions, head 1 prefers position 1.
  const q = new Float32Array([1, 1, 0, 10]);
  const kCache = new Float32Array([
    2,
    0,
    0,
    0, // position 0: k_0 for head 0 | head 1
    0,
    2,
    0,
    1, // position 1
  ]); // (2, 4)
  const vCache = new Float32Array([
    1,
    2,
    3,
    4, // position 0
    5,
    6,
    7,
    8, // position 1
  ]); // (2, 4)
  const w1 = 1 / (1 + Math.exp(-10 * 0.5)); // softmax weight of position 1 in head 1
  const expected = [3, 4, 3 * (1 - w1) + 7 * w1, 4 * (1 - w1) + 8 * w1];
  for (const kernel of [attentionNaive, attention]) {
    const out = new Float32Array(4);
    kernel(out, q, kCache, vCache, new Float32Array(2), 2, 2, 2, 0.5);
    assertClose(kernel.name, out, expected, 4, 1e-6);
  }
});

// ---------------------------------------------------------------------------
// bundled FFN

// Bundles (numRows, 2*d) built from separate fc1 (numRows, d) and fc2 (d, numRows) matrices.
function bundle(fc1: Float32Array, fc2: Float32Array, numRows: number, d: number): Float32Array {
  const bundles = new Float32Array(numRows * 2 * d); // (numRows, 2*d)
  for (let r = 0; r < numRows; r++) {
    for (let i = 0; i < d; i++) {
      bundles[r * 2 * d + i] = fc1[r * d + i]; // up row r
      bundles[r * 2 * d + d + i] = fc2[i * numRows + r]; // down column r
    }
  }
  return bundles;
}

// Per-output error scale: sum over active rows of |act_r * down_r[i]|, at least 1.
function ffnScale(
  bundles: Float32Array,
  act: Float32Array,
  numRows: number,
  d: number,
): Float32Array {
  const scale = new Float32Array(d).fill(1);
  for (let r = 0; r < numRows; r++) {
    for (let i = 0; i < d; i++) scale[i] += Math.abs(act[r] * bundles[r * 2 * d + d + i]);
  }
  return scale;
}

Deno.test("ffnBundled equals ffnBundledNaive on odd shapes, with some or all rows active", () => {
  const rand = makeRandom(12);
  const shapes = [[1, 1], [3, 5], [4, 4], [5, 7], [8, 3], [13, 33], [64, 20]];
  for (const [numRows, d] of shapes) {
    for (const biasOffset of [0, 10]) { // 10: every row active (the fused 4-row path)
      const bundles = randomArray(rand, numRows * 2 * d); // (numRows, 2*d)
      const bias = new Float32Array(numRows);
      for (let r = 0; r < numRows; r++) bias[r] = biasOffset + rand();
      const x = randomArray(rand, d);
      const what = `ffnBundled ${numRows}x${d} bias+${biasOffset}`;

      const expected = new Float32Array(d).fill(NaN); // out is overwritten
      const expectedAct = new Float32Array(numRows);
      const expectedActive = ffnBundledNaive(expected, bundles, bias, x, numRows, d, expectedAct);
      const actual = new Float32Array(d).fill(NaN);
      const actualAct = new Float32Array(numRows);
      const actualActive = ffnBundled(actual, bundles, bias, x, numRows, d, actualAct);

      assert.equal(actualActive, expectedActive, what);
      assertClose(`${what} act`, actualAct, expectedAct, numRows);
      assertClose(what, actual, expected, d, 1e-5, ffnScale(bundles, expectedAct, numRows, d));
      let positive = 0;
      for (let r = 0; r < numRows; r++) if (expectedAct[r] > 0) positive++;
      assert.equal(expectedActive, positive, `${what}: the count is the number of act > 0`);
      const withoutAct = new Float32Array(d);
      assert.equal(ffnBundled(withoutAct, bundles, bias, x, numRows, d), expectedActive);
      assert.deepEqual(withoutAct, actual, `${what}: act must not change the result`);
    }
  }
});

Deno.test("ffnBundled equals relu(fc1 x + b1) then fc2, computed from separate matrices", () => {
  const rand = makeRandom(13);
  for (const [numRows, d] of [[6, 5], [32, 16], [50, 23]]) {
    const fc1 = randomArray(rand, numRows * d); // (numRows, d)
    const fc2 = randomArray(rand, d * numRows); // (d, numRows)
    const b1 = randomArray(rand, numRows); // (numRows)
    const x = randomArray(rand, d); // (d)

    const hidden = new Float32Array(numRows); // (numRows)
    matvecNaive(hidden, fc1, x, numRows, d, b1);
    reluNaive(hidden, numRows);
    const expected = new Float32Array(d); // (d)
    matvecNaive(expected, fc2, hidden, d, numRows);
    let positive = 0;
    for (let r = 0; r < numRows; r++) if (hidden[r] > 0) positive++;
    assert(positive > 0 && positive < numRows, "the data should mix active and inactive rows");

    const bundles = bundle(fc1, fc2, numRows, d);
    const scale = ffnScale(bundles, hidden, numRows, d);
    for (const kernel of [ffnBundledNaive, ffnBundled]) {
      const out = new Float32Array(d);
      const act = new Float32Array(numRows);
      const active = kernel(out, bundles, b1, x, numRows, d, act);
      assert.equal(active, positive, kernel.name);
      assertClose(`${kernel.name} act`, act, hidden, numRows);
      assertClose(`${kernel.name} ${numRows}x${d}`, out, expected, d, 1e-5, scale);
    }
  }
});
