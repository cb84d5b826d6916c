/**
 * The neuron store (*LLM in a Flash*, section 3.3 "Optimized data management in DRAM").
 *
 * One store per layer holds the row-column bundles of the neurons currently in DRAM,
 * byte for byte as the flash file stores them (f32, f16, or int8 with its scales), packed
 * at the top of a preallocated matrix so the FFN can run straight over
 * `bytes[0 : numUsed]` — the order of the rows does not matter to the FFN:
 *
 * ```
 *            bytes (capacity, rowBytes)      pointer   bias
 * row 0    [ up row | down column ]           17      b17
 * row 1    [ up row | down column ]            4      b4
 *  ...
 * numUsed ─────────────────────────────  (rows below are free)
 * ```
 *
 * - **delete** neuron n: copy the last used row's bytes into n's row and decrement
 *   `numUsed` (one row copy; nothing else moves).
 * - **insert** neuron n: append at row `numUsed` and increment; the caller reads the
 *   bundle from flash straight into the row.
 *
 * Nothing is allocated after construction. `rowOf` (neuron → row, -1 when absent) is
 * the reverse index; `lastActive` (neuron → last token it was predicted active) is the
 * window's memory of the last k tokens. A store without weights (`bundle` null, rows of
 * zero bytes) is the load-curve simulator's (`core/window.ts`).
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";
import type { GateActivation } from "../kernels/ffn_gated.ts";
import {
  bundleBytes,
  type BundleMatrix,
  bundleMatrix,
  type WeightDtype,
} from "../kernels/weights.ts";

// ---------------------------------------------------------------------------
// The store

/** What one row of a store holds: a bundle of width `d` stored in `dtype`. */
export interface BundleShape {
  /** Storage dtype of the bundles (the flash file's). */
  dtype: WeightDtype;
  /** Model width: each bundle is an up row and a down column of `d` values (and a gate row). */
  d: number;
  /** The gate's activation of gated bundles `[gate | up | down]` (absent or null: `[up | down]`). */
  gate?: GateActivation | null;
}

/**
 * A preallocated per-layer store of neuron bundles with swap-delete.
 *
 * @example Insert three f16 neurons, delete one, and the hole is filled by the last row
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { NeuronStore } from "./neuron_store.ts";
 * const store = new NeuronStore(4, 10, { dtype: "f16", d: 2 }); // 4 rows of 2 * 2 f16 values
 * assert.equal(store.rowBytes, 8);
 * for (const n of [7, 2, 5]) {
 *   const row = store.insert(n, 0.5);
 *   store.bytes.fill(n, row * 8, row * 8 + 8); // the caller fills the row's bundle
 * }
 * store.delete(7); // row 0 held 7: the last row (neuron 5) moves into it
 * assert.equal(store.numUsed, 2);
 * assert.deepEqual([...store.pointer.subarray(0, 2)], [5, 2]);
 * assert.deepEqual([...store.bytes.subarray(0, 8)], [5, 5, 5, 5, 5, 5, 5, 5]);
 * assert.equal(store.matrix.u16.length, 4 * 4); // the kernel's view of the same bytes
 * assert.equal(store.rowOf[7], -1);
 * ```
 */
export class NeuronStore {
  /** Rows available. */
  readonly capacity: number;
  /** Neurons in the layer (dFfn). */
  readonly numNeurons: number;
  /** Bytes per row: one bundle as stored on flash (0 for a store without weights). */
  readonly rowBytes: number;
  /** The bundles: row r = [up-projection row | down-projection column] of neuron pointer[r]. */
  readonly bytes: Uint8Array; // (capacity, rowBytes) bundles as stored on flash
  /** Typed views of `bytes` for the FFN kernel (`ffnBundles`). */
  readonly matrix: BundleMatrix;
  /** Row → neuron id. */
  readonly pointer: Int32Array; // (capacity)
  /** Row → up-projection (fc1) bias of its neuron. */
  readonly bias: Float32Array; // (capacity)
  /** Rows in use: the FFN runs over rows [0 : numUsed]. */
  numUsed = 0;
  /** Neuron → row, or -1 when the neuron is not in DRAM. */
  readonly rowOf: Int32Array; // (numNeurons)
  /** Neuron → last token index at which it was predicted active (-1: never). */
  readonly lastActive: Int32Array; // (numNeurons)

  /**
   * Preallocate a store of `capacity` rows for a layer of `numNeurons` neurons, each row
   * one bundle of `bundle`'s shape (null: rows of no bytes, for simulation). With
   * `options.shared` the rows and their biases live in `SharedArrayBuffer`s, for the
   * kernel pool's workers.
   */
  constructor(
    capacity: number,
    numNeurons: number,
    bundle: BundleShape | null,
    options: { shared?: boolean } = {},
  ) {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > numNeurons) {
      throw new FlashlmError(`neuron store capacity ${capacity} must be in [0, ${numNeurons}]`, {
        kind: "usage",
      });
    }
    this.capacity = capacity;
    this.numNeurons = numNeurons;
    const gate = bundle?.gate ?? null;
    this.rowBytes = bundle === null ? 0 : bundleBytes(bundle.dtype, bundle.d, gate !== null);
    const shared = options.shared ?? false;
    const rowsBytes = capacity * this.rowBytes;
    this.bytes = shared
      ? new Uint8Array(new SharedArrayBuffer(rowsBytes))
      : new Uint8Array(rowsBytes);
    this.matrix = bundle === null
      ? emptyBundleMatrix()
      : bundleMatrix(bundle.dtype, bundle.d, this.bytes, gate);
    this.pointer = new Int32Array(capacity);
    this.bias = shared
      ? new Float32Array(new SharedArrayBuffer(4 * capacity))
      : new Float32Array(capacity);
    this.rowOf = new Int32Array(numNeurons).fill(-1);
    this.lastActive = new Int32Array(numNeurons).fill(-1);
  }

  /** Whether neuron `neuron` is in DRAM. */
  has(neuron: number): boolean {
    return this.rowOf[neuron] >= 0;
  }

  /**
   * Append neuron `neuron` (with fc1 bias `bias`) at row `numUsed` and return the row;
   * the caller fills `bytes[row * rowBytes, (row + 1) * rowBytes)` with its bundle.
   */
  insert(neuron: number, bias: number): number {
    if (this.rowOf[neuron] >= 0) {
      throw new FlashlmError(`neuron ${neuron} is already in the store`, { kind: "usage" });
    }
    if (this.numUsed === this.capacity) {
      throw new FlashlmError(`neuron store is full (${this.capacity} rows)`, { kind: "usage" });
    }
    const row = this.numUsed++;
    this.pointer[row] = neuron;
    this.bias[row] = bias;
    this.rowOf[neuron] = row;
    return row;
  }

  /** Remove neuron `neuron`: the last used row's bytes are copied into its row. */
  delete(neuron: number): void {
    const row = this.rowOf[neuron];
    if (row < 0) throw new FlashlmError(`neuron ${neuron} is not in the store`, { kind: "usage" });
    const last = --this.numUsed;
    if (row !== last) {
      const moved = this.pointer[last];
      const w = this.rowBytes;
      this.bytes.copyWithin(row * w, last * w, (last + 1) * w);
      this.pointer[row] = moved;
      this.bias[row] = this.bias[last];
      this.rowOf[moved] = row;
    }
    this.rowOf[neuron] = -1;
  }

  /** Empty the store (keeps its memory). */
  clear(): void {
    for (let r = 0; r < this.numUsed; r++) this.rowOf[this.pointer[r]] = -1;
    this.numUsed = 0;
    this.lastActive.fill(-1);
  }

  /** Bytes this store holds in DRAM. */
  byteSize(): number {
    return this.bytes.byteLength + this.pointer.byteLength + this.bias.byteLength +
      this.rowOf.byteLength + this.lastActive.byteLength;
  }
}

/** The views of a store without weights: every one empty. */
function emptyBundleMatrix(): BundleMatrix {
  const bytes = new Uint8Array(0);
  return {
    dtype: "f32",
    d: 0,
    gate: null,
    rowBytes: 0,
    bytes,
    f32: new Float32Array(0),
    u16: new Uint16Array(0),
    i8: new Int8Array(0),
    scales: new Float32Array(0),
  };
}

/**
 * Bytes of DRAM one store needs for `capacity` rows of `rowBytes` bytes (without
 * allocating it).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { NeuronStore, neuronStoreBytes } from "./neuron_store.ts";
 * const store = new NeuronStore(3, 10, { dtype: "int8", d: 4 });
 * assert.equal(neuronStoreBytes(3, 10, store.rowBytes), store.byteSize());
 * ```
 */
export function neuronStoreBytes(capacity: number, numNeurons: number, rowBytes: number): number {
  return capacity * (rowBytes + 4 + 4) + numNeurons * 8;
}
