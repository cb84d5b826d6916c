/**
 * Activation capture: run the dense model over text and record, per layer, the
 * predictor's input and the true active-neuron mask — the training data of the
 * low-rank predictor (*LLM in a Flash*, section 3.1).
 *
 * **Which input.** flashlm's predictor sees the FFN's input *after* its LayerNorm,
 * i.e. exactly the vector fc1 multiplies. A neuron fires when
 * `relu(fc1_i · LN(h) + b_i) > 0`, so a low-rank map of that same vector is the
 * natural predictor, and it need not learn LayerNorm's nonlinearity. (The paper feeds
 * the attention output; in a pre-LN model the two differ only by that LayerNorm.)
 *
 * **Which mask.** A plain FFN's neuron is active when `relu(fc1_i · x + b_i) > 0`. A gated
 * (Llama) FFN's neuron is active when its gate activation `act(gate_i · x)` is not zero
 * (ReLU, fatrelu) — or, with a cutoff τ (core/gate_thresholds.ts), when `|act(gate_i · x)| > τ`,
 * which is how a SiLU gate is made sparse. τ is calibrated from the captured activations,
 * so a gated layer's capture keeps `|act(gate_i · x)|` itself and the mask is made at read
 * time ({@linkcode readCapturedLayer}).
 *
 * Samples are streamed to disk in chunks, one pair of files per layer:
 * `layer-<l>.x` — (n, dModel) f32 — and `layer-<l>.mask` — (n, dFfn) u8 0/1 — or, for a
 * gated FFN, `layer-<l>.act` — (n, dFfn) f32 `|act(gate_i · x)|`.
 * Nothing proportional to the corpus is held in memory.
 *
 * @module
 */

import { writeAll } from "../../io/atomic_write.ts";
import { FlashlmError, osError } from "../../io/errors.ts";
import { getF16Table } from "../../kernels/f16.ts";
import { type GateActivation, gateValue } from "../../kernels/ffn_gated.ts";
import { matvec } from "../../kernels/matvec.ts";
import { gateActivation } from "../config.ts";
import type { LoadedModel } from "../engine.ts";
import { DenseFfn, type DenseFfnLayer, type FfnProvider, type FfnStats } from "../ffn.ts";

// ---------------------------------------------------------------------------
// Gate activations

/**
 * `out[i] = |act(gate_i · x)|` for every neuron of a gated layer `W` (a checkpoint's f32
 * gate, or bundles `[gate | up | down]` at their stored precision) with the gate's own
 * activation `gate` (no cutoff). Not a hot path: capture and calibration only.
 *
 * Shapes: `x` (dModel), `out` (dFfn).
 *
 * @example One f32 bundle of width 2: gate = [1, 0]
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { gateMagnitudes } from "./capture.ts";
 * import { bundleMatrix } from "../../kernels/weights.ts";
 * const relu = { kind: "relu", threshold: 0 } as const;
 * const m = bundleMatrix("f32", 2, new Uint8Array(new Float32Array([1, 0, 5, 5, 1, 1]).buffer), relu);
 * const out = new Float32Array(1);
 * gateMagnitudes(m, relu, new Float32Array([3, 9]), 1, 2, out);
 * assert.equal(out[0], 3);
 * gateMagnitudes(m, relu, new Float32Array([-3, 9]), 1, 2, out);
 * assert.equal(out[0], 0);
 * ```
 */
export function gateMagnitudes(
  W: DenseFfnLayer,
  gate: GateActivation,
  x: Float32Array,
  dFfn: number,
  dModel: number,
  out: Float32Array,
): void {
  if ("fc1" in W) {
    matvec(out, W.gate!, x, dFfn, dModel); // (dFfn) = gate (dFfn, dModel) @ x
  } else {
    const d = W.d;
    const t = W.dtype === "f16" ? getF16Table() : null;
    for (let r = 0; r < dFfn; r++) {
      let g = 0;
      if (W.dtype === "f32") {
        const g0 = r * 3 * d;
        for (let i = 0; i < d; i++) g += W.f32[g0 + i] * x[i];
      } else if (W.dtype === "f16") {
        const g0 = r * 3 * d;
        for (let i = 0; i < d; i++) g += t![W.u16[g0 + i]] * x[i];
      } else {
        const g0 = r * 3 * (d + 4); // [gate (d int8) | scale | ...]
        for (let i = 0; i < d; i++) g += W.i8[g0 + i] * x[i];
        g *= W.scales[(g0 + d) / 4];
      }
      out[r] = g;
    }
  }
  for (let r = 0; r < dFfn; r++) out[r] = Math.abs(gateValue(out[r], gate));
}

// ---------------------------------------------------------------------------
// The capturing FFN

const CHUNK_SAMPLES = 512;

/** Wraps the dense FFN and appends (input, mask) of every call to per-layer files. */
class CapturingFfn implements FfnProvider {
  readonly mode = "capture";
  private inner: DenseFfn;
  private dModel: number;
  private dFfn: number;
  private files: { x: Deno.FsFile; mask: Deno.FsFile }[];
  private xChunk: Float32Array[]; // per layer (CHUNK_SAMPLES, dModel)
  private maskChunk: Uint8Array[]; // per layer (CHUNK_SAMPLES, dFfn)
  private actChunk: Float32Array[]; // per layer (CHUNK_SAMPLES, dFfn) |act(gate x)| (gated FFN)
  private gate: GateActivation | null;
  private filled: number[]; // per layer samples in the chunk
  /** Samples written per layer. */
  readonly written: number[];

  constructor(
    inner: DenseFfn,
    dModel: number,
    dFfn: number,
    files: { x: Deno.FsFile; mask: Deno.FsFile }[],
    gate: GateActivation | null,
  ) {
    this.inner = inner;
    this.dModel = dModel;
    this.dFfn = dFfn;
    this.files = files;
    this.gate = gate;
    this.xChunk = files.map(() => new Float32Array(CHUNK_SAMPLES * dModel));
    this.maskChunk = files.map(() => new Uint8Array(gate ? 0 : CHUNK_SAMPLES * dFfn));
    this.actChunk = files.map(() => new Float32Array(gate ? CHUNK_SAMPLES * dFfn : 0));
    this.filled = files.map(() => 0);
    this.written = files.map(() => 0);
  }

  get stats(): FfnStats {
    return this.inner.stats;
  }

  async forward(layer: number, x: Float32Array, out: Float32Array): Promise<void> {
    await this.inner.forward(layer, x, out);
    const i = this.filled[layer]++;
    this.xChunk[layer].set(x, i * this.dModel);
    const dFfn = this.dFfn;
    if (this.gate) {
      const act = this.actChunk[layer].subarray(i * dFfn, (i + 1) * dFfn);
      gateMagnitudes(this.inner.weights[layer], this.gate, x, dFfn, this.dModel, act);
    } else {
      const mask = this.maskChunk[layer];
      const h = this.inner.hidden;
      for (let j = 0; j < dFfn; j++) mask[i * dFfn + j] = h[j] !== 0 ? 1 : 0;
    }
    if (this.filled[layer] === CHUNK_SAMPLES) await this.flush(layer);
  }

  async flush(layer: number): Promise<void> {
    const n = this.filled[layer];
    if (n === 0) return;
    const x = this.xChunk[layer];
    await writeAll(this.files[layer].x, new Uint8Array(x.buffer, 0, n * this.dModel * 4));
    const mask = this.gate
      ? new Uint8Array(this.actChunk[layer].buffer, 0, n * this.dFfn * 4) // |act| as f32
      : this.maskChunk[layer].subarray(0, n * this.dFfn);
    await writeAll(this.files[layer].mask, mask);
    this.written[layer] += n;
    this.filled[layer] = 0;
  }

  close(): void {}
}

// ---------------------------------------------------------------------------
// Capture

/** What {@linkcode captureActivations} wrote. */
export interface CaptureResult {
  /** Directory of the sample files. */
  dir: string;
  /** Samples per layer (one per token position). */
  samples: number;
  /** Tokens per window; sample i is position i % windowTokens of its window. */
  windowTokens: number;
  dModel: number;
  dFfn: number;
  nLayers: number;
  /**
   * Whether the FFN is gated: each layer then has `layer-<l>.act` (|act(gate x)|, f32)
   * in place of `layer-<l>.mask`.
   */
  gated: boolean;
}

/**
 * Run `model` (which must be in dense mode) over `windows` and write every layer's
 * FFN inputs and true masks under `dir`.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureActivations } from "./capture.ts";
 * import { buildSyntheticHfModel } from "../../tools/demo_model.ts";
 * import { loadModel } from "../engine.ts";
 * const hf = await Deno.makeTempDir();
 * await buildSyntheticHfModel(hf, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const model = await loadModel(hf, { mode: "dense" });
 * const out = await Deno.makeTempDir();
 * const result = await captureActivations(model, [[2, 70, 71, 72]], out);
 * assert.equal(result.samples, 4);
 * assert.equal((await Deno.stat(`${out}/layer-0.mask`)).size, 4 * 32);
 * ```
 */
export async function captureActivations(
  model: LoadedModel,
  windows: number[][],
  dir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<CaptureResult> {
  const transformer = model.transformer;
  if (!(transformer.ffn instanceof DenseFfn)) {
    throw new FlashlmError("activation capture needs the model in dense mode", { kind: "usage" });
  }
  const { dModel, dFfn, nLayers } = model.config;
  const windowTokens = windows[0]?.length ?? 0;
  if (windows.some((w) => w.length !== windowTokens) || windowTokens === 0) {
    throw new FlashlmError("capture windows must be non-empty and of equal length", {
      kind: "usage",
    });
  }
  const files: { x: Deno.FsFile; mask: Deno.FsFile }[] = [];
  const dense = transformer.ffn;
  const gate = gateActivation(model.config);
  const maskName = gate ? "act" : "mask";
  try {
    await Deno.mkdir(dir, { recursive: true });
    for (let l = 0; l < nLayers; l++) {
      files.push({
        x: await Deno.open(`${dir}/layer-${l}.x`, { write: true, create: true, truncate: true }),
        mask: await Deno.open(`${dir}/layer-${l}.${maskName}`, {
          write: true,
          create: true,
          truncate: true,
        }),
      });
    }
    const capturing = new CapturingFfn(dense, dModel, dFfn, files, gate);
    // Swap the FFN for the capture run, and always put the dense one back.
    transformer.ffn = capturing;
    try {
      for (const [w, window] of windows.entries()) {
        for (let pos = 0; pos < window.length; pos++) {
          await transformer.forward(window[pos], pos, false);
        }
        onProgress?.(w + 1, windows.length);
      }
      for (let l = 0; l < nLayers; l++) await capturing.flush(l);
    } finally {
      transformer.ffn = dense;
    }
    return {
      dir,
      samples: capturing.written[0],
      windowTokens,
      dModel,
      dFfn,
      nLayers,
      gated: gate !== null,
    };
  } catch (err) {
    throw captureError(err, dir);
  } finally {
    for (const f of files) {
      f.x.close();
      f.mask.close();
    }
  }
}

/**
 * `err` as the error to report for the capture files in `dir`: an OS condition (disk full,
 * read-only, …, see {@linkcode osError}) becomes a one-line {@linkcode FlashlmError} of kind
 * "io" naming `dir` and TMPDIR, which chooses where they go; anything else is returned as is.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureError } from "./capture.ts";
 * const err = captureError(new Error("No space left on device (os error 28)"), "/tmp/c");
 * assert.match(String((err as Error).message), /^\/tmp\/c: no space left on device: .*TMPDIR/);
 * ```
 */
export function captureError(err: unknown, dir: string): unknown {
  if (err instanceof FlashlmError) return err;
  const known = osError(err, dir, "no such directory");
  return known
    ? new FlashlmError(
      `${known.message} (activation capture files; set TMPDIR to put them elsewhere)`,
      { kind: "io", cause: err },
    )
    : err;
}

/**
 * A new temporary directory for capture files (under $TMPDIR, else /tmp); an OS condition
 * becomes {@linkcode captureError}'s one-line error naming where it tried.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureDir } from "./capture.ts";
 * const dir = await captureDir("flashlm-example-");
 * assert.ok((await Deno.stat(dir)).isDirectory);
 * await Deno.remove(dir);
 * ```
 */
export async function captureDir(prefix: string): Promise<string> {
  try {
    return await Deno.makeTempDir({ prefix });
  } catch (err) {
    throw captureError(err, tempRoot());
  }
}

/** Where {@linkcode Deno.makeTempDir} puts directories: $TMPDIR, else /tmp. */
function tempRoot(): string {
  try {
    return Deno.env.get("TMPDIR") ?? "/tmp";
  } catch {
    /* no permission to read the environment */
    return "$TMPDIR";
  }
}

/**
 * Read one layer's captured samples back: x (n, dModel) f32 and mask (n, dFfn) u8 — for a
 * gated FFN, `|act(gate_i · x)| > cutoff` (default 0: the gate is not zero).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { captureActivations, readCapturedLayer } from "./capture.ts";
 * import { buildSyntheticHfModel } from "../../tools/demo_model.ts";
 * import { loadModel } from "../engine.ts";
 * const hf = await Deno.makeTempDir();
 * await buildSyntheticHfModel(hf, { dModel: 16, dFfn: 32, nLayers: 1, nHeads: 2, extraTokens: 0 });
 * const capture = await captureActivations(await loadModel(hf, { mode: "dense" }), [[2, 70]], `${hf}/cap`);
 * const layer = await readCapturedLayer(capture, 0);
 * assert.equal(layer.n, 2);
 * assert.equal(layer.x.length, 2 * 16);
 * ```
 */
export async function readCapturedLayer(
  capture: CaptureResult,
  layer: number,
  cutoff = 0,
): Promise<{ n: number; x: Float32Array; mask: Uint8Array }> {
  const xBytes = await Deno.readFile(`${capture.dir}/layer-${layer}.x`);
  let mask: Uint8Array;
  if (capture.gated) {
    const act = await readCapturedGate(capture, layer);
    mask = new Uint8Array(act.length);
    for (let i = 0; i < act.length; i++) mask[i] = act[i] > cutoff ? 1 : 0;
  } else {
    mask = await Deno.readFile(`${capture.dir}/layer-${layer}.mask`);
  }
  const n = capture.samples;
  if (xBytes.length !== n * capture.dModel * 4 || mask.length !== n * capture.dFfn) {
    throw new FlashlmError(`captured samples of layer ${layer} have the wrong size`, {
      file: capture.dir,
    });
  }
  return { n, x: new Float32Array(xBytes.buffer, xBytes.byteOffset, n * capture.dModel), mask };
}

/**
 * A gated layer's captured gate activations `|act(gate_i · x)|`, (n, dFfn) f32: what the
 * cutoff of `train-predictor --sparsity` is calibrated on.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { readCapturedGate } from "./capture.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeFile(`${dir}/layer-0.act`, new Uint8Array(new Float32Array([0.5, 0]).buffer));
 * const capture = { dir, samples: 1, windowTokens: 1, dModel: 1, dFfn: 2, nLayers: 1, gated: true };
 * assert.deepEqual([...await readCapturedGate(capture, 0)], [0.5, 0]);
 * ```
 */
export async function readCapturedGate(
  capture: CaptureResult,
  layer: number,
): Promise<Float32Array> {
  const bytes = await Deno.readFile(`${capture.dir}/layer-${layer}.act`);
  if (!capture.gated || bytes.length !== capture.samples * capture.dFfn * 4) {
    throw new FlashlmError(`captured gate activations of layer ${layer} have the wrong size`, {
      file: capture.dir,
    });
  }
  return new Float32Array(bytes.buffer, bytes.byteOffset, capture.samples * capture.dFfn);
}
