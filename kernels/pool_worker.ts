/**
 * One worker of the kernel pool (`pool.ts`). It learns the pool's control array from its
 * first message and the typed arrays it computes over from later ones, then serves: it
 * blocks in `Atomics.wait` until the main thread starts a new generation, runs that
 * generation's command over its range (of rows, attention heads or output columns), counts itself done and waits again. A task
 * that throws is caught: its message goes to the error area and the worker still counts
 * itself done, so the main thread never waits for it in vain. `CMD_YIELD` returns to the
 * event loop so the next message (new views) is delivered; its handler serves again.
 *
 * @module
 */

import { attentionHeads } from "./attention.ts";
import { attentionF16Heads } from "./attention_f16.ts";
import { ffnActs, ffnDown } from "./ffn_split.ts";
import { matvecRows } from "./matvec.ts";
import { matvecF16Rows } from "./matvec_f16.ts";
import { matvecI8Rows } from "./matvec_i8.ts";
import type { BundleMatrix } from "./weights.ts";
import {
  C_ACT,
  C_BIAS,
  C_CMD,
  C_COLS,
  C_DONE,
  C_ERROR,
  C_ERROR_LENGTH,
  C_FAULT,
  C_FROM,
  C_GEN,
  C_HEAD_DIM,
  C_HEADS,
  C_K_CACHE,
  C_KERNEL,
  C_KV_HEADS,
  C_OUT,
  C_POSITIONS,
  C_Q,
  C_RANGES,
  C_READY,
  C_SCALES,
  C_STOPPED,
  C_TO,
  C_V_CACHE,
  C_W,
  C_X,
  CMD_STOP,
  CMD_TASK,
  CMD_YIELD,
  controlLayout,
  ERROR_BYTES,
  KERNEL_ATTENTION_F16,
  KERNEL_ATTENTION_F32,
  KERNEL_FFN_ACTS_F16,
  KERNEL_FFN_ACTS_F32,
  KERNEL_FFN_ACTS_I8,
  KERNEL_FFN_DOWN_F16,
  KERNEL_FFN_DOWN_F32,
  KERNEL_FFN_DOWN_I8,
  KERNEL_LINEAR_F16,
  KERNEL_LINEAR_F32,
  KERNEL_LINEAR_I8,
  type PoolMessage,
  type SharedView,
} from "./pool_protocol.ts";

/** What this script needs of the worker global scope (Deno's and Bun's alike). */
interface WorkerScope {
  onmessage: ((event: MessageEvent<PoolMessage>) => void) | null;
  close(): void;
}

const scope = globalThis as unknown as WorkerScope;

// ---------------------------------------------------------------------------
// State, set by the messages

let control: Int32Array<SharedArrayBuffer> = new Int32Array(new SharedArrayBuffer(0)); // (controlWords(workers)) the pool's control words
let errorArea: Uint8Array<SharedArrayBuffer> = new Uint8Array(new SharedArrayBuffer(0)); // (ERROR_BYTES) UTF-8 message of a failed task
let scale: Float64Array<SharedArrayBuffer> = new Float64Array(new SharedArrayBuffer(8)); // (1) attention scale
let scores = new Float32Array(0); // (>= positions) this worker's attention scores, grown as needed
let index = 0; // this worker's index: its row range is C_RANGES + 2 * index
let seen = 0; // the last generation this worker acted on
const views: SharedView[] = []; // the typed arrays of the pool, by id
// The FFN tasks' bundles, its fields set per task (no object per call); plain bundles only
// (gated ones run on the calling thread).
const bundles: BundleMatrix = {
  dtype: "f32",
  d: 0,
  gate: null,
  rowBytes: 0,
  bytes: new Uint8Array(0),
  f32: new Float32Array(0),
  u16: new Uint16Array(0),
  i8: new Int8Array(0),
  scales: new Float32Array(0),
};

scope.onmessage = (event: MessageEvent<PoolMessage>): void => {
  const message = event.data;
  if (message.type === "init") {
    index = message.index;
    const layout = controlLayout(message.workers);
    control = new Int32Array(message.control, 0, layout.words);
    scale = new Float64Array(message.control, layout.scaleByte, 1);
    errorArea = new Uint8Array(message.control, layout.errorByte, ERROR_BYTES);
    Atomics.add(control, C_READY, 1);
    Atomics.notify(control, C_READY);
  } else {
    for (const view of message.views) views.push(view);
    Atomics.add(control, C_DONE, 1);
    Atomics.notify(control, C_DONE);
  }
  serve();
};

// ---------------------------------------------------------------------------
// Serving

/** Run commands until one says to return to the event loop or stop. */
function serve(): void {
  for (;;) {
    Atomics.wait(control, C_GEN, seen);
    const gen = Atomics.load(control, C_GEN);
    if (gen === seen) continue; // a spurious wake-up
    seen = gen;
    const cmd = Atomics.load(control, C_CMD);
    if (cmd === CMD_YIELD) return;
    if (cmd === CMD_STOP) {
      Atomics.add(control, C_STOPPED, 1);
      Atomics.notify(control, C_STOPPED);
      scope.close();
      return;
    }
    if (cmd === CMD_TASK) {
      try {
        runTask();
      } catch (e) {
        reportError(e);
      }
    }
    Atomics.add(control, C_DONE, 1);
    Atomics.notify(control, C_DONE);
  }
}

/** This worker's rows of the task in the control words. */
function runTask(): void {
  if (Atomics.load(control, C_FAULT) === index + 1) {
    Atomics.store(control, C_FAULT, 0);
    throw new Error("a fault injected by the test hook");
  }
  const start = control[C_RANGES + 2 * index];
  const end = control[C_RANGES + 2 * index + 1];
  if (start >= end) return;
  const kernel = control[C_KERNEL];
  if (kernel === KERNEL_ATTENTION_F32 || kernel === KERNEL_ATTENTION_F16) {
    return runAttention(kernel, start, end);
  }
  if (kernel >= KERNEL_FFN_ACTS_F32 && kernel <= KERNEL_FFN_DOWN_I8) {
    return runFfn(kernel, start, end);
  }
  const cols = control[C_COLS];
  const out = views[control[C_OUT]] as Float32Array;
  const x = views[control[C_X]] as Float32Array;
  const b = control[C_BIAS];
  const bias = b < 0 ? null : views[b] as Float32Array;
  const w = views[control[C_W]];
  switch (control[C_KERNEL]) {
    case KERNEL_LINEAR_F32:
      return matvecRows(out, w as Float32Array, x, start, end, cols, bias);
    case KERNEL_LINEAR_F16:
      return matvecF16Rows(out, w as Uint16Array, x, start, end, cols, bias);
    case KERNEL_LINEAR_I8: {
      const scales = views[control[C_SCALES]] as Float32Array;
      return matvecI8Rows(out, w as Int8Array, scales, x, start, end, cols, bias);
    }
    default:
      throw new Error(`unknown kernel ${control[C_KERNEL]}`);
  }
}

/** Heads `start .. end-1` of the attention task in the control words. */
function runAttention(kernel: number, start: number, end: number): void {
  const out = views[control[C_OUT]] as Float32Array;
  const q = views[control[C_Q]] as Float32Array;
  const positions = control[C_POSITIONS];
  if (scores.length < positions) scores = new Float32Array(Math.max(positions, 2 * scores.length));
  const nHeads = control[C_HEADS], headDim = control[C_HEAD_DIM], nKv = control[C_KV_HEADS];
  const k = views[control[C_K_CACHE]], v = views[control[C_V_CACHE]];
  if (kernel === KERNEL_ATTENTION_F16) {
    const kc = k as Uint16Array, vc = v as Uint16Array;
    attentionF16Heads(
      out,
      q,
      kc,
      vc,
      scores,
      nHeads,
      headDim,
      positions,
      scale[0],
      start,
      end,
      nKv,
    );
  } else {
    const kc = k as Float32Array, vc = v as Float32Array;
    attentionHeads(out, q, kc, vc, scores, nHeads, headDim, positions, scale[0], start, end, nKv);
  }
}

/**
 * The FFN task in the control words: activations of rows `start .. end-1`, or the down
 * projection of rows `C_FROM .. C_TO-1` into output columns `start .. end-1`.
 */
function runFfn(kernel: number, start: number, end: number): void {
  const m = bundles;
  const w = views[control[C_W]];
  m.d = control[C_COLS];
  if (kernel === KERNEL_FFN_ACTS_F32 || kernel === KERNEL_FFN_DOWN_F32) {
    m.dtype = "f32";
    m.f32 = w as Float32Array;
  } else if (kernel === KERNEL_FFN_ACTS_F16 || kernel === KERNEL_FFN_DOWN_F16) {
    m.dtype = "f16";
    m.u16 = w as Uint16Array;
  } else {
    m.dtype = "int8";
    m.i8 = w as Int8Array;
    m.scales = views[control[C_SCALES]] as Float32Array;
  }
  const act = views[control[C_ACT]] as Float64Array;
  if (kernel <= KERNEL_FFN_ACTS_I8) {
    const bias = views[control[C_BIAS]] as Float32Array;
    ffnActs(act, m, bias, views[control[C_X]] as Float32Array, start, end);
  } else {
    const out = views[control[C_OUT]] as Float32Array;
    ffnDown(out, m, act, control[C_FROM], control[C_TO], start, end);
  }
}

/** Put the first failure's message in the error area (later ones are dropped). */
function reportError(e: unknown): void {
  if (Atomics.compareExchange(control, C_ERROR, 0, index + 1) !== 0) return;
  const text = e instanceof Error ? e.message : String(e);
  const bytes = new TextEncoder().encode(text).subarray(0, ERROR_BYTES);
  errorArea.set(bytes);
  Atomics.store(control, C_ERROR_LENGTH, bytes.length);
}
