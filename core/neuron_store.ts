/**
 * The neuron store (*LLM in a Flash*, section 3.3 "Optimized data management in DRAM").
 *
 * One store per layer holds the row-column bundles of the neurons currently in DRAM,
 * packed at the top of a preallocated matrix so the FFN can run straight over
 * `matrix[0 : numUsed]` — the order of the rows does not matter to the FFN:
 *
 * ```
 *            matrix (capacity, 2d)          pointer   bias
 * row 0    [ up row | down column ]           17      b17
 * row 1    [ up row | down column ]            4      b4
 *  ...
 * numUsed ─────────────────────────────  (rows below are free)
 * ```
 *
 * - **delete** neuron n: copy the last used row into n's row and decrement `numUsed`
 *   (one row copy; nothing else moves).
 * - **insert** neuron n: append at row `numUsed` and increment.
 *
 * Nothing is allocated after construction. `rowOf` (neuron → row, -1 when absent) is
 * the reverse index; `lastActive` (neuron → last token it was predicted active) is the
 * window's memory of the last k tokens.
 *
 * @module
 */

import { FlashlmError } from "../io/errors.ts";

// ---------------------------------------------------------------------------
// The store

/**
 * A preallocated per-layer store of neuron bundles with swap-delete.
 *
 * @example Insert three neurons, delete one, and the hole is filled by the last row
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { NeuronStore } from "./neuron_store.ts";
 * const store = new NeuronStore(4, 10, 2); // capacity 4 rows, 10 neurons, rows of 2 values
 * for (const n of [7, 2, 5]) {
 *   const row = store.insert(n, 0.5);
 *   store.matrix.fill(n, row * 2, row * 2 + 2); // the caller fills the row's bundle
 * }
 * store.delete(7); // row 0 held 7: the last row (neuron 5) moves into it
 * assert.equal(store.numUsed, 2);
 * assert.deepEqual([...store.pointer.subarray(0, 2)], [5, 2]);
 * assert.deepEqual([...store.matrix.subarray(0, 2)], [5, 5]);
 * assert.equal(store.rowOf[7], -1);
 * ```
 */
export class NeuronStore {
  /** Rows available. */
  readonly capacity: number;
  /** Neurons in the layer (dFfn). */
  readonly numNeurons: number;
  /** Values per row (2 * dModel for a ReLU FFN bundle). */
  readonly rowValues: number;
  /** The bundles: row r = [up-projection row | down-projection column] of neuron pointer[r]. */
  readonly matrix: Float32Array; // (capacity, rowValues)
  /** Row → neuron id. */
  readonly pointer: Int32Array; // (capacity)
  /** Row → up-projection (fc1) bias of its neuron. */
  readonly bias: Float32Array; // (capacity)
  /** Rows in use: the FFN runs over matrix[0 : numUsed]. */
  numUsed = 0;
  /** Neuron → row, or -1 when the neuron is not in DRAM. */
  readonly rowOf: Int32Array; // (numNeurons)
  /** Neuron → last token index at which it was predicted active (-1: never). */
  readonly lastActive: Int32Array; // (numNeurons)

  /** Preallocate a store of `capacity` rows for a layer of `numNeurons` neurons. */
  constructor(capacity: number, numNeurons: number, rowValues: number) {
    if (!Number.isInteger(capacity) || capacity < 0 || capacity > numNeurons) {
      throw new FlashlmError(`neuron store capacity ${capacity} must be in [0, ${numNeurons}]`, {
        kind: "usage",
      });
    }
    this.capacity = capacity;
    this.numNeurons = numNeurons;
    this.rowValues = rowValues;
    this.matrix = new Float32Array(capacity * rowValues);
    this.pointer = new Int32Array(capacity);
    this.bias = new Float32Array(capacity);
    this.rowOf = new Int32Array(numNeurons).fill(-1);
    this.lastActive = new Int32Array(numNeurons).fill(-1);
  }

  /** Whether neuron `neuron` is in DRAM. */
  has(neuron: number): boolean {
    return this.rowOf[neuron] >= 0;
  }

  /**
   * Append neuron `neuron` (with fc1 bias `bias`) at row `numUsed` and return the row;
   * the caller fills `matrix[row * rowValues, (row + 1) * rowValues)` with its bundle.
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

  /** Remove neuron `neuron`: the last used row is copied into its row. */
  delete(neuron: number): void {
    const row = this.rowOf[neuron];
    if (row < 0) throw new FlashlmError(`neuron ${neuron} is not in the store`, { kind: "usage" });
    const last = --this.numUsed;
    if (row !== last) {
      const moved = this.pointer[last];
      const w = this.rowValues;
      this.matrix.copyWithin(row * w, last * w, (last + 1) * w);
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
    return this.matrix.byteLength + this.pointer.byteLength + this.bias.byteLength +
      this.rowOf.byteLength + this.lastActive.byteLength;
  }
}

/**
 * Bytes of DRAM one store needs for `capacity` rows (without allocating it).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { NeuronStore, neuronStoreBytes } from "./neuron_store.ts";
 * assert.equal(neuronStoreBytes(3, 10, 4), new NeuronStore(3, 10, 4).byteSize());
 * ```
 */
export function neuronStoreBytes(capacity: number, numNeurons: number, rowValues: number): number {
  return capacity * (rowValues * 4 + 4 + 4) + numNeurons * 8;
}
