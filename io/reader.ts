/**
 * The flash reader: every FFN byte that flashlm streams from flash goes through here.
 *
 * *LLM in a Flash*, section 2: small random reads are slow; larger chunks and many
 * reads in flight are fast, and reading a few unneeded bytes is cheaper than issuing
 * another read. So the reader takes a whole batch of positioned reads (offset,
 * length, destination) and
 *
 * 1. sorts them by offset and **coalesces** neighbours whose gap is at most
 *    `coalesceGapBytes` into one larger read (a "run"),
 * 2. splits very long runs into chunks of `maxChunkBytes`,
 * 3. keeps up to `depth` reads in flight on a backend (`io/read_backends.ts`): either
 *    the whole list in one call (io_uring, or glibc AIO, through FFI) or `depth` lanes
 *    that each take the next read when theirs completes (libc `pread` through FFI, a
 *    pool of Deno file handles, or `node:fs` for Bun/Node), looping on short reads,
 * 4. lands each run's bytes: straight into the destination when the run is one
 *    contiguous piece of one destination, else into a scratch arena from which they
 *    are scattered to the destinations.
 *
 * Destinations are caller-owned typed arrays, and the plan and scratch buffers are
 * kept between calls: in steady state a `read()` allocates no buffers (only the small
 * promises and views that any async read makes).
 *
 * @module
 */

import { FlashlmError } from "./errors.ts";
import {
  type BackendChoice,
  openBackend,
  type ReadBackend,
  resolveBackend,
} from "./read_backends.ts";

// ---------------------------------------------------------------------------
// Requests: a preallocated batch of (file offset, length, destination) triples

/**
 * A reusable list of positioned reads. Preallocate one per use site and `clear()`
 * it every token: adding requests allocates nothing once capacity is reached.
 * Requests may come in any order, overlap each other, and share destinations.
 *
 * @example Building a batch
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ReadBatch } from "./reader.ts";
 * const dest = new Uint8Array(8192);
 * const batch = new ReadBatch(4);
 * batch.add(0, 4096, dest, 0);
 * batch.add(8192, 4096, dest, 4096);
 * assert(batch.count === 2 && batch.totalBytes === 8192);
 * ```
 */
export class ReadBatch {
  /** Number of requests currently in the batch. */
  count = 0;
  /** Sum of the requested lengths. */
  totalBytes = 0;
  /** File offset of each request. */
  offsets: Float64Array; // (capacity)
  /** Length in bytes of each request. */
  lengths: Float64Array; // (capacity)
  /** Offset into `dests[i]` where request i's bytes go. */
  destOffsets: Float64Array; // (capacity)
  /** Destination array of each request. */
  dests: Uint8Array[]; // (capacity)

  /** Make an empty batch that grows past `capacity` if it must. */
  constructor(capacity = 64) {
    capacity = Math.max(1, capacity);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Float64Array(capacity);
    this.destOffsets = new Float64Array(capacity);
    this.dests = new Array<Uint8Array>(capacity);
  }

  /** Forget all requests (keeps the storage). */
  clear(): void {
    this.count = 0;
    this.totalBytes = 0;
  }

  /** Ask for `length` bytes at file `offset` into `dest[destOffset, destOffset + length)`. */
  add(offset: number, length: number, dest: Uint8Array, destOffset: number): void {
    if (this.count === this.offsets.length) this.grow();
    const i = this.count++;
    this.offsets[i] = offset;
    this.lengths[i] = length;
    this.dests[i] = dest;
    this.destOffsets[i] = destOffset;
    this.totalBytes += length;
  }

  /** Double the capacity, keeping the requests. */
  private grow(): void {
    const cap = this.offsets.length * 2;
    this.offsets = grown(this.offsets, cap);
    this.lengths = grown(this.lengths, cap);
    this.destOffsets = grown(this.destOffsets, cap);
    this.dests.length = cap;
  }
}

function grown<T extends Float64Array | Uint32Array | Uint8Array>(a: T, capacity: number): T {
  const b = new (a.constructor as new (n: number) => T)(capacity);
  b.set(a);
  return b;
}

// ---------------------------------------------------------------------------
// Statistics and options

/** What the reader has done so far (cumulative; subtract two snapshots for a window). */
export interface ReadStats {
  /** Bytes delivered to destinations (the sum of the request lengths). */
  bytes: number;
  /** Requests served. */
  requests: number;
  /** Positioned reads issued to the operating system, after coalescing and chunking. */
  reads: number;
  /** Bytes read from the file: delivered bytes plus the gaps read to coalesce, overlaps once. */
  diskBytes: number;
  /** Wall-clock milliseconds spent inside `read()` calls. */
  ms: number;
}

/** Options of {@linkcode FlashReader.open}. */
export interface FlashReaderOptions {
  /** How many reads are kept in flight at once. Default 32. */
  depth?: number;
  /** Largest single read issued; longer runs are split into chunks of this size. Default 1 MiB. */
  maxChunkBytes?: number;
  /** How reads reach the file; default `"auto"` (see `io/read_backends.ts`). */
  backend?: BackendChoice;
  /** Merge nearby requests into one read. Default true. */
  coalesce?: boolean;
  /**
   * Requests at most this many bytes apart are read as one (the gap is read and
   * dropped); 0 merges only touching or overlapping requests. Default
   * {@linkcode DEFAULT_COALESCE_GAP_BYTES}.
   */
  coalesceGapBytes?: number;
}

/**
 * Default largest gap bridged by coalescing: one page. Measured on sparse layer-sized
 * batches of 4 KiB and 16 KiB bundles (cold cache, depth 32): bridging gaps up to
 * 4–16 KiB is as fast as or faster than not merging, while 64 KiB and more loses up
 * to half the throughput on dense batches (the extra bytes cost more than the reads
 * they save). Raise it for backends with a high cost per read (`fs-pool`, `node-fs`).
 */
export const DEFAULT_COALESCE_GAP_BYTES = 4096;

// ---------------------------------------------------------------------------
// The reader

/**
 * Issues batches of positioned reads against one file with many reads in flight.
 *
 * @example Reading two ranges of a file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FlashReader, ReadBatch } from "./reader.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]));
 * const reader = await FlashReader.open(path, { depth: 4 });
 * const dest = new Uint8Array(4);
 * const batch = new ReadBatch();
 * batch.add(6, 2, dest, 0);
 * batch.add(1, 2, dest, 2);
 * await reader.read(batch);
 * reader.close();
 * assert.equal(dest.join(), "6,7,1,2");
 * assert.equal(reader.stats.bytes, 4);
 * await Deno.remove(path);
 * ```
 */
export class FlashReader {
  /** The file being read. */
  readonly path: string;
  /** Size of the file in bytes. */
  readonly fileSize: number;
  /** Reads kept in flight. */
  readonly depth: number;
  /** Largest single read issued. */
  readonly maxChunkBytes: number;
  /** Whether nearby requests are merged. */
  readonly coalesce: boolean;
  /** Largest gap (bytes) bridged when merging. */
  readonly coalesceGapBytes: number;
  /**
   * The backend in use: `"io-uring"`, `"ffi-aio"`, `"ffi-pread"`, `"fs-pool"`,
   * `"node-fs"`, or a custom one's name.
   */
  readonly backend: string;
  /** Cumulative statistics. */
  readonly stats: ReadStats = { bytes: 0, requests: 0, reads: 0, diskBytes: 0, ms: 0 };

  private file: ReadBackend;
  private closed = false;
  private busy = false;

  // The plan of one read() call, kept between calls.
  private batch: ReadBatch | null = null;
  private order = new Uint32Array(64); // (requests) request indices sorted by offset
  private runStart = new Float64Array(64); // (runs) file offset of each run
  private runLength = new Float64Array(64); // (runs) bytes of each run
  private runFirst = new Uint32Array(64); // (runs) first position in `order`
  private runEnd = new Uint32Array(64); // (runs) one past the last position in `order`
  private runDirect = new Uint8Array(64); // (runs) 1: read straight into the destination
  private runScratch = new Float64Array(64); // (runs) where a coalesced run lands in `arena`
  private runCount = 0;
  private arena = new Uint8Array(0); // (scratch bytes) landing place of coalesced runs
  private arenaUsed = 0;
  // The chunk list handed to list backends in one call.
  private listDests: Uint8Array[] = []; // (chunks) where each chunk lands
  private listOffsets = new Float64Array(64); // (chunks) file offset of each chunk
  private listDone = new Float64Array(64); // (chunks) bytes the backend read

  // Work queue shared by the lanes: the next (run, chunk) to read.
  private nextRun = 0;
  private nextChunk = 0;
  private failure: unknown = null;
  private lanesRunning: Promise<void>[] = [];

  private constructor(file: ReadBackend, options: FlashReaderOptions) {
    this.file = file;
    this.path = file.path;
    this.fileSize = file.fileSize;
    this.depth = file.lanes;
    this.backend = file.name;
    this.maxChunkBytes = options.maxChunkBytes ?? (1 << 20);
    this.coalesce = options.coalesce ?? true;
    this.coalesceGapBytes = options.coalesceGapBytes ?? DEFAULT_COALESCE_GAP_BYTES;
  }

  /**
   * Open `path` with `options.depth` lanes on `options.backend`. A missing or
   * unreadable file is an `io` {@linkcode FlashlmError}; bad options are `usage` errors.
   */
  static async open(path: string, options: FlashReaderOptions = {}): Promise<FlashReader> {
    const depth = options.depth ?? 32;
    if (!Number.isInteger(depth) || depth < 1 || depth > 1024) {
      throw new FlashlmError(`reader depth must be an integer in [1, 1024], got ${depth}`, {
        kind: "usage",
      });
    }
    checkOptions(options);
    const file = await openBackend(resolveBackend(options.backend ?? "auto"), path, depth);
    return new FlashReader(file, options);
  }

  /**
   * A reader over an already open backend (one lane per read in flight): the way to
   * plug in another backend or a test double.
   *
   * @example A backend that serves a byte array
   * ```ts
   * import { strict as assert } from "node:assert";
   * import { FlashReader, ReadBatch } from "./reader.ts";
   * const data = new Uint8Array([10, 11, 12, 13]);
   * const reader = FlashReader.fromBackend({
   *   name: "memory", path: "memory", fileSize: data.length, lanes: 2,
   *   readAt: (_lane, dest, offset) => {
   *     const n = Math.min(dest.length, data.length - offset);
   *     dest.set(data.subarray(offset, offset + n));
   *     return Promise.resolve(n);
   *   },
   *   close: () => {},
   * });
   * const dest = new Uint8Array(2);
   * const batch = new ReadBatch();
   * batch.add(2, 2, dest, 0);
   * await reader.read(batch);
   * assert.deepEqual([...dest], [12, 13]);
   * ```
   */
  static fromBackend(file: ReadBackend, options: FlashReaderOptions = {}): FlashReader {
    checkOptions(options);
    return new FlashReader(file, options);
  }

  /**
   * Perform every request of `batch` and resolve when all bytes are in their
   * destinations. A request beyond the end of the file is a `format`
   * {@linkcode FlashlmError} (nothing is read); a failed or truncated read is an `io` one.
   */
  async read(batch: ReadBatch): Promise<void> {
    if (this.closed) throw new FlashlmError("reader is closed", { file: this.path, kind: "io" });
    if (this.busy) {
      throw new FlashlmError("read() called while another read() is running", {
        file: this.path,
        kind: "usage",
      });
    }
    this.busy = true;
    const t0 = performance.now();
    try {
      const chunks = this.plan(batch);
      this.batch = batch;
      if (this.file.readList) await this.readListed(chunks);
      else await this.readInLanes(chunks);
    } catch (e) {
      // A backend's own error (EIO, a closed handle...) becomes one clear I/O error.
      if (e instanceof FlashlmError) throw e;
      const why = String((e as Error)?.message ?? e).replace(/\s+/g, " ");
      throw new FlashlmError(`read of a ${batch.totalBytes}-byte batch failed: ${why}`, {
        file: this.path,
        kind: "io",
        cause: e,
      });
    } finally {
      this.batch = null;
      this.busy = false;
    }
    this.stats.bytes += batch.totalBytes;
    this.stats.requests += batch.count;
    this.stats.ms += performance.now() - t0;
  }

  /** Close the file. Safe to call twice; do not call while a `read()` runs. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file.close();
  }

  // -------------------------------------------------------------------------
  // Planning: validate, sort, coalesce into runs

  /** Turn `batch` into runs (sorted, merged); returns the number of chunks to read. */
  private plan(batch: ReadBatch): number {
    const n = batch.count;
    const { offsets, lengths, destOffsets, dests } = batch;
    for (let i = 0; i < n; i++) {
      const offset = offsets[i], length = lengths[i], destOffset = destOffsets[i];
      if (
        !Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) ||
        length < 0
      ) {
        throw new FlashlmError(
          `read request ${i} has a bad offset ${offset} or length ${length}`,
          { file: this.path, kind: "usage" },
        );
      }
      if (offset + length > this.fileSize) {
        throw new FlashlmError(
          `read of ${length} bytes at offset ${offset} is past the end of the file (${this.fileSize} bytes)`,
          { file: this.path },
        );
      }
      const dest = dests[i];
      if (
        !(dest instanceof Uint8Array) || !Number.isSafeInteger(destOffset) || destOffset < 0 ||
        destOffset + length > dest.length
      ) {
        throw new FlashlmError(
          `read request ${i} (${length} bytes) does not fit its destination at offset ${destOffset}`,
          { file: this.path, kind: "usage" },
        );
      }
    }

    // Sort request indices by offset (skipped when already sorted, the usual case).
    if (this.order.length < n) this.order = new Uint32Array(grownCapacity(n));
    const order = this.order;
    let sorted = true;
    for (let i = 0; i < n; i++) {
      order[i] = i;
      if (i > 0 && offsets[i] < offsets[i - 1]) sorted = false;
    }
    if (!sorted) {
      this.sortKeys = offsets;
      order.subarray(0, n).sort(this.byOffset);
    }

    // Walk in offset order, growing the current run while the next request is close.
    const gap = this.coalesce ? this.coalesceGapBytes : -1;
    const maxChunk = this.maxChunkBytes;
    this.runCount = 0;
    this.arenaUsed = 0;
    let chunks = 0;
    let r = -1; // current run
    let start = 0, end = 0, direct = false;
    let directDest: Uint8Array | null = null, directShift = 0; // dest offset - file offset
    for (let k = 0; k < n; k++) {
      const i = order[k];
      const offset = offsets[i], length = lengths[i];
      if (length === 0) continue;
      if (r >= 0 && offset <= end + gap) {
        if (
          direct && offset === end && dests[i] === directDest &&
          destOffsets[i] - offset === directShift
        ) {
          end = offset + length; // still one contiguous piece of one destination
          this.runEnd[r] = k + 1;
          continue;
        }
        const merged = Math.max(end, offset + length) - start;
        if (merged <= maxChunk) {
          end = start + merged; // lands in scratch, then scattered
          direct = false;
          this.runEnd[r] = k + 1;
          continue;
        }
      }
      if (r >= 0) chunks += this.closeRun(r, start, end, direct);
      r = this.openRun(k);
      start = offset;
      end = offset + length;
      direct = true;
      directDest = dests[i];
      directShift = destOffsets[i] - offset;
    }
    if (r >= 0) chunks += this.closeRun(r, start, end, direct);
    if (this.arena.length < this.arenaUsed) {
      this.arena = new Uint8Array(2 ** Math.ceil(Math.log2(this.arenaUsed)));
    }
    return chunks;
  }

  private sortKeys: Float64Array = new Float64Array(0);
  private byOffset = (a: number, b: number): number => this.sortKeys[a] - this.sortKeys[b];

  /** Start a new run at sorted request k (growing the run arrays when full); returns its index. */
  private openRun(k: number): number {
    if (this.runCount === this.runStart.length) {
      const cap = this.runCount * 2;
      this.runStart = grown(this.runStart, cap);
      this.runLength = grown(this.runLength, cap);
      this.runFirst = grown(this.runFirst, cap);
      this.runEnd = grown(this.runEnd, cap);
      this.runDirect = grown(this.runDirect, cap);
      this.runScratch = grown(this.runScratch, cap);
    }
    const r = this.runCount++;
    this.runFirst[r] = k;
    this.runEnd[r] = k + 1;
    return r;
  }

  /** Record run r's extent (and its place in the arena); returns how many chunks it takes. */
  private closeRun(r: number, start: number, end: number, direct: boolean): number {
    this.runStart[r] = start;
    this.runLength[r] = end - start;
    this.runDirect[r] = direct ? 1 : 0;
    if (!direct) {
      this.runScratch[r] = this.arenaUsed;
      this.arenaUsed += end - start;
    }
    return Math.ceil((end - start) / this.maxChunkBytes);
  }

  /** Where chunk `[chunkStart, chunkStart + length)` of run r lands. */
  private landing(r: number, chunkStart: number, length: number): Uint8Array {
    if (this.runDirect[r]) {
      // One contiguous piece of one destination: straight into it.
      const batch = this.batch!;
      const i = this.order[this.runFirst[r]];
      const at = batch.destOffsets[i] + (this.runStart[r] + chunkStart - batch.offsets[i]);
      return batch.dests[i].subarray(at, at + length);
    }
    const at = this.runScratch[r] + chunkStart;
    return this.arena.subarray(at, at + length);
  }

  /** Copy coalesced run r from the arena to each of its requests. */
  private scatter(r: number): void {
    const batch = this.batch!;
    const base = this.runScratch[r] - this.runStart[r]; // arena index of file offset 0
    for (let k = this.runFirst[r]; k < this.runEnd[r]; k++) {
      const i = this.order[k];
      const from = base + batch.offsets[i];
      batch.dests[i].set(this.arena.subarray(from, from + batch.lengths[i]), batch.destOffsets[i]);
    }
  }

  // -------------------------------------------------------------------------
  // Reading, list backends: every chunk in one call

  /** Hand all `chunks` chunks to the backend at once, finish short reads, scatter. */
  private async readListed(chunks: number): Promise<void> {
    if (this.listOffsets.length < chunks) {
      this.listOffsets = new Float64Array(grownCapacity(chunks));
      this.listDone = new Float64Array(this.listOffsets.length);
    }
    const dests = this.listDests, offsets = this.listOffsets, done = this.listDone;
    dests.length = chunks;
    let k = 0;
    for (let r = 0; r < this.runCount; r++) {
      const runLength = this.runLength[r];
      for (let c = 0; c < runLength; c += this.maxChunkBytes, k++) {
        dests[k] = this.landing(r, c, Math.min(this.maxChunkBytes, runLength - c));
        offsets[k] = this.runStart[r] + c;
      }
    }
    try {
      await this.file.readList!(chunks, dests, offsets, done);
      this.stats.reads += chunks;
      for (let k = 0; k < chunks; k++) {
        this.stats.diskBytes += done[k];
        if (done[k] < dests[k].length) {
          // Rare: finish a short read on its own.
          await this.readFully(k % this.depth, dests[k].subarray(done[k]), offsets[k] + done[k]);
        }
      }
    } finally {
      dests.fill(this.arena, 0, chunks); // keep no caller's memory alive
    }
    for (let r = 0; r < this.runCount; r++) if (!this.runDirect[r]) this.scatter(r);
  }

  // -------------------------------------------------------------------------
  // Reading, lane backends: `depth` lanes take chunks off the plan until none is left

  /** Run min(depth, chunks) lanes over the plan; rethrow the first error. */
  private async readInLanes(chunks: number): Promise<void> {
    this.nextRun = 0;
    this.nextChunk = 0;
    this.failure = null;
    const lanes = Math.min(this.depth, chunks);
    const running = this.lanesRunning;
    running.length = lanes;
    for (let lane = 0; lane < lanes; lane++) running[lane] = this.lane(lane);
    await Promise.all(running); // lanes never reject: they park the error in `failure`
    if (this.failure !== null) throw this.failure;
  }

  /** One in-flight lane. Never rejects: the first error stops every lane. */
  private async lane(lane: number): Promise<void> {
    const maxChunk = this.maxChunkBytes;
    try {
      while (this.nextRun < this.runCount && this.failure === null) {
        // Take the next chunk synchronously, so two lanes never take the same one.
        const r = this.nextRun;
        const chunkStart = this.nextChunk;
        const runLength = this.runLength[r];
        const length = Math.min(maxChunk, runLength - chunkStart);
        if (chunkStart + length >= runLength) {
          this.nextRun++;
          this.nextChunk = 0;
        } else {
          this.nextChunk = chunkStart + length;
        }
        await this.readFully(
          lane,
          this.landing(r, chunkStart, length),
          this.runStart[r] + chunkStart,
        );
        if (!this.runDirect[r]) this.scatter(r); // coalesced runs are one chunk
      }
    } catch (e) {
      this.failure ??= e;
    }
  }

  /** Positioned read of all of `dest` that loops on short reads. */
  private async readFully(lane: number, dest: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < dest.length) {
      const n = await this.file.readAt(
        lane,
        done === 0 ? dest : dest.subarray(done),
        offset + done,
      );
      this.stats.reads++;
      if (n <= 0) {
        throw new FlashlmError(
          `unexpected end of file reading ${dest.length} bytes at offset ${offset} (was the file truncated?)`,
          { file: this.path, kind: "io" },
        );
      }
      done += n;
      this.stats.diskBytes += n;
    }
  }
}

function checkOptions(options: FlashReaderOptions): void {
  const chunk = options.maxChunkBytes ?? (1 << 20);
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 2 ** 30) {
    throw new FlashlmError(`reader maxChunkBytes must be an integer in [1, 2^30], got ${chunk}`, {
      kind: "usage",
    });
  }
  const gap = options.coalesceGapBytes ?? 0;
  if (!Number.isInteger(gap) || gap < 0) {
    throw new FlashlmError(`reader coalesceGapBytes must be an integer >= 0, got ${gap}`, {
      kind: "usage",
    });
  }
}

function grownCapacity(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(n, 64)));
}
