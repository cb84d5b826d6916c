/**
 * What the engine actually holds in DRAM, measured from its typed arrays: the check on
 * the memory plan (`core/memory_plan.ts`). {@linkcode heldBytes} walks objects and sums
 * the distinct `ArrayBuffer`s they reach, so a buffer seen through several views (an f32
 * tensor viewing the file's resident section, the KV cache's per-layer views) counts
 * once, at its full size.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// What an FFN provider holds

/** DRAM an FFN provider holds, by the memory plan's lines (bytes). */
export interface FfnMemory {
  /** FFN weights in DRAM: neuron stores with their bookkeeping, or every bundle (dense). */
  weights: number;
  /** Per-token buffers: a layer read from flash, predicted ids, read lists, window state. */
  workspace: number;
  /** The activation predictor's weights and scratch (and any copy of its serialized form). */
  predictor: number;
  /** The flash reader's own buffers (scratch of coalesced reads, request lists). */
  reader: number;
}

// ---------------------------------------------------------------------------
// Reachable buffers

/**
 * Bytes of the distinct `ArrayBuffer`s reachable from `roots` through object
 * properties, arrays, maps and sets, leaving out everything reachable from `exclude`
 * (objects there are not entered, and their buffers do not count).
 *
 * @example Views of one buffer count once; excluded objects not at all
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { heldBytes } from "./memory_use.ts";
 * const cache = new Float32Array(256); // 1 KiB
 * const weights = { w: new Uint16Array(100) }; // 200 bytes
 * const model = { cache, layers: [cache.subarray(0, 128), cache.subarray(128)], weights };
 * assert.equal(heldBytes([model]), 1024 + 200);
 * assert.equal(heldBytes([model], [weights]), 1024);
 * ```
 */
export function heldBytes(roots: unknown[], exclude: unknown[] = []): number {
  const skip = new Set<unknown>();
  const skipBuffers = new Set<ArrayBufferLike>();
  walk(exclude, skip, skipBuffers);
  const buffers = new Set<ArrayBufferLike>();
  walk(roots, new Set(skip), buffers);
  let total = 0;
  for (const b of buffers) if (!skipBuffers.has(b)) total += b.byteLength;
  return total;
}

/** Add every buffer reachable from `roots` to `buffers`, not entering objects in `visited`. */
function walk(roots: unknown[], visited: Set<unknown>, buffers: Set<ArrayBufferLike>): void {
  const stack: unknown[] = [...roots];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== "object" || visited.has(v)) continue;
    visited.add(v);
    if (ArrayBuffer.isView(v)) buffers.add(v.buffer);
    else if (v instanceof ArrayBuffer || v instanceof SharedArrayBuffer) buffers.add(v);
    else if (v instanceof Map || v instanceof Set) { for (const x of v.values()) stack.push(x); }
    else {
      for (const key of Object.getOwnPropertyNames(v)) {
        stack.push((v as Record<string, unknown>)[key]);
      }
    }
  }
}
