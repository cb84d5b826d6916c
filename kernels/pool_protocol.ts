/**
 * The words the kernel pool's main thread and its workers share: one `Int32Array` over a
 * `SharedArrayBuffer` (the control array) holds the command, the task and the counters
 * both sides wait on, followed by the attention scale and a byte area for a failed
 * worker's message. Imported by
 * `pool.ts` (the main thread) and `pool_worker.ts` (each worker), so neither imports the
 * other.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Control words (indices into the control Int32Array)

/** Generation: the main thread adds 1 per command; workers wait for it to change. */
export const C_GEN = 0;
/** The command of the current generation (`CMD_*`). */
export const C_CMD = 1;
/** Workers done with the current command; the main thread waits for it to reach their count. */
export const C_DONE = 2;
/** 0, or 1 + the index of the first worker whose task threw. */
export const C_ERROR = 3;
/** Bytes of that worker's UTF-8 message in the error area. */
export const C_ERROR_LENGTH = 4;
/** Test hook: 1 + the index of a worker that throws in its next task (0: none). */
export const C_FAULT = 5;
/** Workers that have started and received their first message. */
export const C_READY = 6;
/** Workers that have acknowledged `CMD_STOP` (they serve no more). */
export const C_STOPPED = 7;
/** Task: the kernel (`KERNEL_*`). */
export const C_KERNEL = 8;
/** Task: view id of the weights. */
export const C_W = 9;
/** Task: view id of the int8 row scales, or -1. */
export const C_SCALES = 10;
/** Task: view id of the input vector. */
export const C_X = 11;
/** Task: view id of the output vector. */
export const C_OUT = 12;
/** Task: view id of the bias, or -1. */
export const C_BIAS = 13;
/** Task: columns of the matrix (FFN tasks: the bundles' width d). */
export const C_COLS = 14;
/** FFN task: view id of the activations (float64, one per row). */
export const C_ACT = 15;
/** Attention task: view id of the query. */
export const C_Q = 16;
/** Attention task: view id of the key cache. */
export const C_K_CACHE = 17;
/** Attention task: view id of the value cache. */
export const C_V_CACHE = 18;
/** Attention task: heads. */
export const C_HEADS = 19;
/** Attention task: values per head. */
export const C_HEAD_DIM = 20;
/** Attention task: cached positions attended to. */
export const C_POSITIONS = 21;
/** FFN down-projection task: first row summed. */
export const C_FROM = 22;
/** FFN down-projection task: end of the rows summed. */
export const C_TO = 23;
/** Attention task: key/value heads (fewer than the heads with grouped-query attention). */
export const C_KV_HEADS = 24;
/**
 * Task: (workers, 2) each worker's range `[start, end)` of rows (linear, FFN
 * activations), heads (attention) or output columns (FFN down projection).
 */
export const C_RANGES = 25;

/** Bytes of the error area (a longer message is cut). */
export const ERROR_BYTES = 1024;

/**
 * Where things are in the pool's control buffer: the control words (an `Int32Array`),
 * then one float64 (the attention scale: a double, so the workers use the caller's), then
 * the error area.
 */
export interface ControlLayout {
  /** Int32 words at byte 0. */
  words: number;
  /** Byte offset of the float64 scale (a multiple of 8). */
  scaleByte: number;
  /** Byte offset of the error area. */
  errorByte: number;
  /** Bytes of the whole buffer. */
  bytes: number;
}

/** The layout of the control buffer of a pool with `workers` workers. */
export function controlLayout(workers: number): ControlLayout {
  const words = C_RANGES + 2 * workers;
  const scaleByte = 8 * Math.ceil((4 * words) / 8);
  const errorByte = scaleByte + 8;
  return { words, scaleByte, errorByte, bytes: errorByte + ERROR_BYTES };
}

// ---------------------------------------------------------------------------
// Commands and kernels

/** Run the task in the control words over this worker's row range. */
export const CMD_TASK = 1;
/** Return to the event loop: a message with new views is waiting. */
export const CMD_YIELD = 2;
/** Stop serving (the pool is closing). */
export const CMD_STOP = 3;

/** `linearRows` over f32 weights. */
export const KERNEL_LINEAR_F32 = 0;
/** `linearRows` over f16 weights. */
export const KERNEL_LINEAR_F16 = 1;
/** `linearRows` over int8 weights with row scales. */
export const KERNEL_LINEAR_I8 = 2;
/** `attentionHeads` over an f32 KV cache. */
export const KERNEL_ATTENTION_F32 = 3;
/** `attentionF16Heads` over an f16 KV cache. */
export const KERNEL_ATTENTION_F16 = 4;
/** `ffnActs` over f32 bundles (the weights view: their f32 values). */
export const KERNEL_FFN_ACTS_F32 = 5;
/** `ffnActs` over f16 bundles (the weights view: their 16-bit words). */
export const KERNEL_FFN_ACTS_F16 = 6;
/** `ffnActs` over int8 bundles (the weights view: int8; the scales view: the same bytes as f32). */
export const KERNEL_FFN_ACTS_I8 = 7;
/** `ffnDown` over f32 bundles. */
export const KERNEL_FFN_DOWN_F32 = 8;
/** `ffnDown` over f16 bundles. */
export const KERNEL_FFN_DOWN_F16 = 9;
/** `ffnDown` over int8 bundles. */
export const KERNEL_FFN_DOWN_I8 = 10;

/** A typed array the pool computes over (always over a `SharedArrayBuffer`). */
export type SharedView = Float32Array | Float64Array | Uint16Array | Int8Array;

/** The messages a worker receives: its start, then views to add to its table. */
export type PoolMessage =
  | { type: "init"; control: SharedArrayBuffer; index: number; workers: number }
  | { type: "views"; views: SharedView[] };
