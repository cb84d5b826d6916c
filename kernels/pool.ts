/**
 * All cores on one kernel: a pool of worker threads started once, computing over typed
 * arrays in `SharedArrayBuffer`s that each worker is told about once (by `postMessage`).
 * Per kernel call the main thread writes the task into a shared control array (kernel,
 * view ids, each worker's row range), wakes the workers with `Atomics.notify`, computes
 * its own rows, then waits in `Atomics.wait` until every worker has counted itself done:
 * no message per call, no allocation per call, and the call stays synchronous.
 *
 * Three kernels: `linear` (rows split), `attention` (heads split) and `ffn`, the bundled
 * FFN over a range of neuron-store rows (activations with the rows split, then the down
 * projection with the output columns split: `ffn_split.ts`). Each output row, head or
 * element is computed by exactly one thread with the one-thread kernel's loops
 * (`linearRows`, whose ranges start at multiples of 4 so the 4-row blocks fall where
 * `linear`'s do; `attentionHeads`; `ffnActs`, `ffnDown`), so the result is bit-identical
 * for any number of threads. Work of fewer than `minParallelWork` multiply-adds runs on
 * the main thread alone: waking the workers costs more than it saves there.
 *
 * A task that throws in a worker ends the call with the pool's error (one line naming the
 * worker); a worker that does not answer within `timeoutMs` ends it too, and closes the
 * pool. `close()` terminates every worker.
 *
 * Works under Deno and Bun (both allow `Atomics.wait` on the main thread).
 *
 * @module
 */

import { attentionHeads } from "./attention.ts";
import { attentionF16Heads } from "./attention_f16.ts";
import { ffnActs, ffnDown } from "./ffn_split.ts";
import { type BundleMatrix, linearRows, type WeightMatrix } from "./weights.ts";
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

export type { SharedView } from "./pool_protocol.ts";

// ---------------------------------------------------------------------------
// Options

/**
 * Multiply-adds below which a call runs on the main thread alone. Measured with
 * `deno run -A kernels/mitata_bench.ts --threads` on a 2-core machine at load 1.0: a call
 * on 2 threads costs about 55 µs more than on one at 128 x 128 f32 (a wake-up and a
 * wait), loses at 256 x 256 (0.45x), breaks even near 512 x 512 (0.87-1.04x) and wins
 * from 768 x 768 (1.26-1.52x); this threshold is about 724 x 724.
 */
export const MIN_PARALLEL_WORK = 512 * 1024;

/** Milliseconds `close()` waits for the workers to acknowledge the stop before terminating them. */
export const STOP_WAIT_MS = 1000;

/** Options of {@linkcode KernelPool}. */
export interface KernelPoolOptions {
  /** Threads that compute, the main thread included (default: the machine's cores). */
  threads?: number;
  /** Multiply-adds below which a call runs on the main thread alone (default {@linkcode MIN_PARALLEL_WORK}). */
  minParallelWork?: number;
  /** Milliseconds a call waits for the workers before it fails and closes the pool (default 60 s). */
  timeoutMs?: number;
  /** Makes the error a failed call throws (default: `new Error(message)`); core passes `FlashlmError`. */
  error?: (message: string) => Error;
}

/** The machine's cores as the runtime reports them (1 when it does not). */
export function machineThreads(): number {
  const n = globalThis.navigator?.hardwareConcurrency;
  return typeof n === "number" && n >= 1 ? Math.floor(n) : 1;
}

// ---------------------------------------------------------------------------
// The pool

/**
 * Worker threads started once, computing kernels over shared typed arrays.
 *
 * @example A product on 2 threads equals the one-thread product, bit for bit
 * ```ts
 * import assert from "node:assert";
 * import { KernelPool, sharedFloat32 } from "./pool.ts";
 * import { f32Matrix, linear } from "./weights.ts";
 * const rows = 1030, cols = 600;
 * const w = f32Matrix(sharedFloat32(rows * cols), rows, cols);
 * for (let i = 0; i < rows * cols; i++) w.data[i] = Math.sin(i);
 * const x = sharedFloat32(cols).fill(0.5), out = sharedFloat32(rows);
 * const pool = new KernelPool({ threads: 2, minParallelWork: 0 });
 * try {
 *   await pool.ready();
 *   pool.linear(out, w, x);
 *   const one = new Float32Array(rows);
 *   linear(one, w, x);
 *   assert.deepEqual(out, one);
 * } finally {
 *   pool.close();
 * }
 * ```
 */
export class KernelPool {
  /** Threads that compute, the main thread included. */
  readonly threads: number;
  /** Multiply-adds below which a call runs on the main thread alone. */
  readonly minParallelWork: number;
  private readonly timeoutMs: number;
  private readonly makeError: (message: string) => Error;
  private readonly workers: Worker[] = [];
  private readonly control: Int32Array; // (controlLayout(workers).words) shared with the workers
  private readonly scale: Float64Array; // (1) the attention scale, shared with the workers
  private readonly errorArea: Uint8Array; // (ERROR_BYTES) a failed worker's UTF-8 message
  private readonly ids = new Map<SharedView, number>(); // view -> its id in every worker
  private workerFailure: string | null = null; // an error event of a worker, if any
  private closed = false;

  /** Start `threads - 1` workers (none for one thread). */
  constructor(options: KernelPoolOptions = {}) {
    this.threads = Math.max(1, Math.floor(options.threads ?? machineThreads()));
    this.minParallelWork = options.minParallelWork ?? MIN_PARALLEL_WORK;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.makeError = options.error ?? ((message) => new Error(message));
    const n = this.threads - 1; // workers
    const layout = controlLayout(n);
    const buffer = new SharedArrayBuffer(layout.bytes);
    this.control = new Int32Array(buffer, 0, layout.words);
    this.scale = new Float64Array(buffer, layout.scaleByte, 1);
    this.errorArea = new Uint8Array(buffer, layout.errorByte, ERROR_BYTES);
    const url = new URL("./pool_worker.ts", import.meta.url).href;
    for (let i = 0; i < n; i++) {
      const worker = new Worker(url, { type: "module" });
      worker.onerror = (event: ErrorEvent): void => {
        event.preventDefault();
        this.workerFailure ??= `kernel worker ${i + 1} failed: ${event.message}`;
      };
      const init: PoolMessage = { type: "init", control: buffer, index: i, workers: n };
      worker.postMessage(init);
      this.workers.push(worker);
    }
  }

  /**
   * Resolves once every worker has started (rejects with the pool's error if one fails
   * to); calls work before it, but only this can report a worker that never starts.
   */
  async ready(): Promise<void> {
    const deadline = performance.now() + this.timeoutMs;
    while (Atomics.load(this.control, C_READY) < this.workers.length) {
      if (this.workerFailure !== null) throw this.fail(this.workerFailure);
      if (this.closed) throw this.makeError("the kernel pool is closed");
      if (performance.now() > deadline) {
        throw this.fail(`kernel workers did not start within ${this.timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  /**
   * Tell every worker about `views` (typed arrays over `SharedArrayBuffer`s), once: a
   * message per worker and a round trip, at setup. Views already known are skipped;
   * `linear` shares the views it is given on their first use.
   */
  share(...views: SharedView[]): void {
    this.check();
    const fresh: SharedView[] = [];
    for (const view of views) {
      if (this.ids.has(view) || fresh.includes(view)) continue;
      if (!(view.buffer instanceof SharedArrayBuffer)) {
        throw this.makeError(
          `the kernel pool computes over SharedArrayBuffers; got a ${view.constructor.name} over an ArrayBuffer`,
        );
      }
      fresh.push(view);
    }
    if (fresh.length === 0) return;
    for (const view of fresh) this.ids.set(view, this.ids.size);
    if (this.workers.length === 0) return;
    const message: PoolMessage = { type: "views", views: fresh };
    for (const worker of this.workers) worker.postMessage(message);
    this.start(CMD_YIELD);
    this.finish();
  }

  /**
   * `out = w @ x + bias` (see `linear`), rows split across the threads; bit-identical
   * to `linear`. `w.data` (and int8 scales), `x`, `out` and `bias` must be views over
   * `SharedArrayBuffer`s unless the matrix is small enough for the main thread alone.
   *
   * Shapes: `out` (w.rows), `x` (w.cols), `bias` (w.rows) or none.
   */
  linear(out: Float32Array, w: WeightMatrix, x: Float32Array, bias?: Float32Array | null): void {
    const rows = w.rows;
    if (this.workers.length === 0 || rows * w.cols < this.minParallelWork) {
      linearRows(out, w, x, 0, rows, bias);
      return;
    }
    this.check();
    const scales = w.dtype === "int8" ? w.scales : null;
    if (!(this.has(w.data) && this.has(x) && this.has(out) && this.has(bias) && this.has(scales))) {
      this.share(w.data, x, out);
      if (bias) this.share(bias);
      if (scales) this.share(scales);
    }
    const c = this.control;
    c[C_KERNEL] = w.dtype === "f32"
      ? KERNEL_LINEAR_F32
      : w.dtype === "f16"
      ? KERNEL_LINEAR_F16
      : KERNEL_LINEAR_I8;
    c[C_W] = this.ids.get(w.data)!;
    c[C_SCALES] = scales ? this.ids.get(scales)! : -1;
    c[C_X] = this.ids.get(x)!;
    c[C_OUT] = this.ids.get(out)!;
    c[C_BIAS] = bias ? this.ids.get(bias)! : -1;
    c[C_COLS] = w.cols;
    // Thread t gets blocks of 4 rows [blocks*t/T, blocks*(t+1)/T); the last one the tail.
    const blocks = Math.ceil(rows / 4);
    const T = this.threads;
    for (let i = 0; i < this.workers.length; i++) {
      const t = i + 1; // thread 0 is the main thread
      c[C_RANGES + 2 * i] = 4 * Math.floor((blocks * t) / T);
      c[C_RANGES + 2 * i + 1] = Math.min(rows, 4 * Math.floor((blocks * (t + 1)) / T));
    }
    this.start(CMD_TASK);
    let ownError: unknown = null;
    try {
      linearRows(out, w, x, 0, Math.min(rows, 4 * Math.floor(blocks / T)), bias);
    } catch (e) {
      ownError = e;
    }
    this.finish(ownError);
  }

  /**
   * Causal attention of one query over `t` cached positions (see `attention` and
   * `attentionF16`: the cache's type picks the kernel), heads split across the threads;
   * bit-identical to the one-thread kernel. Each worker has its own scores scratch; the
   * main thread uses `scores`. `out`, `q` and the caches must be views over
   * `SharedArrayBuffer`s unless the work is small enough for the main thread alone.
   *
   * Shapes: `out` and `q` (nHeads*headDim), `kCache` and `vCache` (maxT, nKvHeads*headDim)
   * with rows 0..t-1 valid, `scores` (>= t). Query head `h` reads KV head
   * `floor(h / (nHeads / nKvHeads))` (grouped-query attention; default one KV head each).
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array | Uint16Array,
    vCache: Float32Array | Uint16Array,
    scores: Float32Array,
    nHeads: number,
    headDim: number,
    t: number,
    scale: number,
    nKvHeads: number = nHeads,
  ): void {
    const f16 = kCache instanceof Uint16Array;
    const T = this.threads;
    const parallel = this.workers.length > 0 && nHeads >= 2 &&
      2 * t * nHeads * headDim >= this.minParallelWork;
    if (parallel) {
      this.check();
      if (!(this.has(out) && this.has(q) && this.has(kCache) && this.has(vCache))) {
        this.share(out, q, kCache, vCache);
      }
      const c = this.control;
      c[C_KERNEL] = f16 ? KERNEL_ATTENTION_F16 : KERNEL_ATTENTION_F32;
      c[C_OUT] = this.ids.get(out)!;
      c[C_Q] = this.ids.get(q)!;
      c[C_K_CACHE] = this.ids.get(kCache)!;
      c[C_V_CACHE] = this.ids.get(vCache)!;
      c[C_HEADS] = nHeads;
      c[C_HEAD_DIM] = headDim;
      c[C_POSITIONS] = t;
      c[C_KV_HEADS] = nKvHeads;
      this.scale[0] = scale;
      for (let i = 0; i < this.workers.length; i++) {
        c[C_RANGES + 2 * i] = Math.floor((nHeads * (i + 1)) / T);
        c[C_RANGES + 2 * i + 1] = Math.floor((nHeads * (i + 2)) / T);
      }
      this.start(CMD_TASK);
    }
    const end = parallel ? Math.floor(nHeads / T) : nHeads; // the main thread's heads: [0, end)
    let ownError: unknown = null;
    try {
      if (f16) {
        const v = vCache as Uint16Array;
        attentionF16Heads(out, q, kCache, v, scores, nHeads, headDim, t, scale, 0, end, nKvHeads);
      } else {
        const v = vCache as Float32Array;
        attentionHeads(out, q, kCache, v, scores, nHeads, headDim, t, scale, 0, end, nKvHeads);
      }
    } catch (e) {
      ownError = e;
    }
    if (parallel) this.finish(ownError);
    else if (ownError !== null) throw ownError;
  }

  /**
   * The bundled FFN over rows `[start, end)` of `m`, added to `out`:
   * `out += Σ_r relu(up_r · x + bias[r]) down_r` (`start` a multiple of 4; the caller
   * zeroes `out` before the first range). Bit-identical to `ffnBundles` over rows
   * `[0, end)` when the ranges are run in order from 0, for any number of threads: the
   * activations are computed with the rows split, then the down projection with the
   * output columns split (`ffnActs`, `ffnDown`). `act` receives each row's activation.
   * `m`'s views, `bias`, `x`, `out` and `act` must be over `SharedArrayBuffer`s unless
   * the work is small enough for the main thread alone.
   *
   * Shapes: `out` and `x` (m.d), `bias` and `act` (>= end).
   */
  ffn(
    out: Float32Array,
    m: BundleMatrix,
    bias: Float32Array,
    x: Float32Array,
    act: Float64Array,
    start: number,
    end: number,
  ): void {
    const d = m.d;
    if (start >= end) return;
    if (m.gate) throw new RangeError("gated bundles have no split kernel: use ffnBundles");
    if (this.workers.length === 0 || 2 * (end - start) * d < this.minParallelWork) {
      ffnActs(act, m, bias, x, start, end);
      ffnDown(out, m, act, start, end, 0, d);
      return;
    }
    this.check();
    const w = m.dtype === "f32" ? m.f32 : m.dtype === "f16" ? m.u16 : m.i8;
    const scales = m.dtype === "int8" ? m.scales : null;
    if (
      !(this.has(w) && this.has(scales) && this.has(bias) && this.has(x) && this.has(out) &&
        this.has(act))
    ) {
      this.share(w, bias, x, out, act);
      if (scales) this.share(scales);
    }
    const c = this.control;
    const T = this.threads;
    c[C_W] = this.ids.get(w)!;
    c[C_SCALES] = scales ? this.ids.get(scales)! : -1;
    c[C_BIAS] = this.ids.get(bias)!;
    c[C_X] = this.ids.get(x)!;
    c[C_OUT] = this.ids.get(out)!;
    c[C_ACT] = this.ids.get(act)!;
    c[C_COLS] = d;
    c[C_FROM] = start;
    c[C_TO] = end;
    // 1. Activations: thread t gets blocks of 4 rows [start + 4*floor(blocks*t/T), ...).
    c[C_KERNEL] = m.dtype === "f32"
      ? KERNEL_FFN_ACTS_F32
      : m.dtype === "f16"
      ? KERNEL_FFN_ACTS_F16
      : KERNEL_FFN_ACTS_I8;
    const blocks = Math.ceil((end - start) / 4);
    for (let i = 0; i < this.workers.length; i++) {
      const t = i + 1; // thread 0 is the main thread
      c[C_RANGES + 2 * i] = start + 4 * Math.floor((blocks * t) / T);
      c[C_RANGES + 2 * i + 1] = Math.min(end, start + 4 * Math.floor((blocks * (t + 1)) / T));
    }
    this.start(CMD_TASK);
    let ownError: unknown = null;
    try {
      ffnActs(act, m, bias, x, start, Math.min(end, start + 4 * Math.floor(blocks / T)));
    } catch (e) {
      ownError = e;
    }
    this.finish(ownError);
    // 2. Down projection: thread t gets columns [4*floor(quads*t/T), ...), the last the tail.
    c[C_KERNEL] = m.dtype === "f32"
      ? KERNEL_FFN_DOWN_F32
      : m.dtype === "f16"
      ? KERNEL_FFN_DOWN_F16
      : KERNEL_FFN_DOWN_I8;
    const quads = Math.ceil(d / 4);
    for (let i = 0; i < this.workers.length; i++) {
      const t = i + 1;
      c[C_RANGES + 2 * i] = 4 * Math.floor((quads * t) / T);
      c[C_RANGES + 2 * i + 1] = Math.min(d, 4 * Math.floor((quads * (t + 1)) / T));
    }
    this.start(CMD_TASK);
    try {
      ffnDown(out, m, act, start, end, 0, Math.min(d, 4 * Math.floor(quads / T)));
    } catch (e) {
      ownError = e;
    }
    this.finish(ownError);
  }

  /** Test hook: worker `index` (0-based) throws in its next task. */
  injectFault(index: number): void {
    Atomics.store(this.control, C_FAULT, index + 1);
  }

  /**
   * Stop every worker: each is told to stop and acknowledges it (waited for up to
   * {@linkcode STOP_WAIT_MS}), then all are terminated, stuck or not. The pool cannot be
   * used after. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const c = this.control;
    Atomics.store(c, C_CMD, CMD_STOP);
    Atomics.add(c, C_GEN, 1);
    Atomics.notify(c, C_GEN);
    const deadline = performance.now() + STOP_WAIT_MS;
    const n = this.workers.length;
    for (
      let stopped = Atomics.load(c, C_STOPPED);
      stopped < n;
      stopped = Atomics.load(c, C_STOPPED)
    ) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      Atomics.wait(c, C_STOPPED, stopped, left);
    }
    for (const worker of this.workers) worker.terminate();
  }

  /** Workers that have acknowledged the stop of `close()` (all of them, for a healthy pool). */
  stoppedWorkers(): number {
    return Atomics.load(this.control, C_STOPPED);
  }

  // -------------------------------------------------------------------------
  // Commands

  /** Whether the workers know `view` (none needs nothing). */
  private has(view: SharedView | null | undefined): boolean {
    return !view || this.ids.has(view);
  }

  /** Throw if the pool cannot take a call. */
  private check(): void {
    if (this.closed) throw this.makeError("the kernel pool is closed");
    if (this.workerFailure !== null) throw this.fail(this.workerFailure);
  }

  /** Start `cmd` on every worker (the task, if any, is in the control words). */
  private start(cmd: number): void {
    const c = this.control;
    Atomics.store(c, C_DONE, 0);
    Atomics.store(c, C_ERROR, 0);
    Atomics.store(c, C_CMD, cmd);
    Atomics.add(c, C_GEN, 1);
    Atomics.notify(c, C_GEN);
  }

  /**
   * Wait until every worker is done with the current command, then throw the first
   * failure: the main thread's own (`ownError`, when its share threw), else a worker's.
   */
  private finish(ownError: unknown = null): void {
    const c = this.control;
    const n = this.workers.length;
    const deadline = performance.now() + this.timeoutMs;
    for (let done = Atomics.load(c, C_DONE); done < n; done = Atomics.load(c, C_DONE)) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw this.fail(`kernel workers did not finish within ${this.timeoutMs} ms`);
      }
      Atomics.wait(c, C_DONE, done, left);
    }
    if (ownError !== null) throw ownError;
    const failed = Atomics.load(c, C_ERROR);
    if (failed !== 0) {
      const length = Atomics.load(c, C_ERROR_LENGTH);
      const text = new TextDecoder().decode(this.errorArea.slice(0, length));
      throw this.makeError(`kernel worker ${failed} failed: ${text}`);
    }
  }

  /** Close the pool (its workers may be stuck) and make the error to throw. */
  private fail(message: string): Error {
    this.close();
    return this.makeError(message);
  }
}

// ---------------------------------------------------------------------------
// Shared arrays

/**
 * A zeroed `Float32Array` of `n` values over a new `SharedArrayBuffer`.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { sharedFloat32 } from "./pool.ts";
 * const a = sharedFloat32(3);
 * assert(a.length === 3 && a.buffer instanceof SharedArrayBuffer);
 * ```
 */
export function sharedFloat32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(4 * n));
}

/**
 * `a` itself if it is over a `SharedArrayBuffer`, else a copy in a new one.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { toShared } from "./pool.ts";
 * const a = toShared(new Uint16Array([1, 2]));
 * assert(a.buffer instanceof SharedArrayBuffer && a[1] === 2 && toShared(a) === a);
 * ```
 */
export function toShared<T extends SharedView>(a: T): T {
  if (a.buffer instanceof SharedArrayBuffer) return a;
  const copy = new (a.constructor as new (buffer: SharedArrayBuffer) => T)(
    new SharedArrayBuffer(a.byteLength),
  );
  copy.set(a as never);
  return copy;
}

/**
 * Move `w`'s values (and int8 scales) into `SharedArrayBuffer`s, in place: the same
 * matrix object, its arrays replaced by shared copies (a no-op for arrays already shared),
 * so every holder of the matrix sees the shared data and the old copy can be collected.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { shareMatrix } from "./pool.ts";
 * import { f32Matrix } from "./weights.ts";
 * const m = f32Matrix(new Float32Array([1, 2]), 1, 2);
 * shareMatrix(m);
 * assert(m.data.buffer instanceof SharedArrayBuffer && m.data[1] === 2);
 * ```
 */
export function shareMatrix(w: WeightMatrix): void {
  switch (w.dtype) {
    case "f32":
      w.data = toShared(w.data);
      return;
    case "f16":
      w.data = toShared(w.data);
      return;
    case "int8":
      w.data = toShared(w.data);
      w.scales = toShared(w.scales);
      return;
  }
}
