/**
 * The flash reader: every FFN byte that flashlm streams from flash goes through here.
 *
 * *LLM in a Flash*, section 2: small random reads are slow; larger chunks and many
 * reads in flight are fast. So the reader takes a whole batch of positioned reads
 * (offset, length, destination), splits very large ones into chunks, and keeps up
 * to `depth` of them in flight at once, each on its own file handle. Destinations
 * are caller-owned typed arrays: nothing is allocated per read.
 *
 * @module
 */

import { FlashlmError } from "../core/errors.ts";

// ---------------------------------------------------------------------------
// Requests: a preallocated batch of (file offset, length, destination) triples

/**
 * A reusable list of positioned reads. Preallocate one per use site and `clear()`
 * it every token: adding requests allocates nothing once capacity is reached.
 *
 * @example Building a batch
 * ```ts
 * import { ReadBatch } from "./reader.ts";
 * const dest = new Uint8Array(8192);
 * const batch = new ReadBatch(4);
 * batch.add(0, 4096, dest, 0);
 * batch.add(8192, 4096, dest, 4096);
 * console.assert(batch.count === 2 && batch.totalBytes === 8192);
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

  private grow(): void {
    const cap = this.offsets.length * 2;
    const copy = (a: Float64Array): Float64Array => {
      const b = new Float64Array(cap);
      b.set(a);
      return b;
    };
    this.offsets = copy(this.offsets);
    this.lengths = copy(this.lengths);
    this.destOffsets = copy(this.destOffsets);
    this.dests.length = cap;
  }
}

// ---------------------------------------------------------------------------
// Statistics

/** What the reader has done so far (cumulative; subtract two snapshots for a window). */
export interface ReadStats {
  /** Bytes delivered to destinations. */
  bytes: number;
  /** Positioned reads issued to the operating system. */
  reads: number;
  /** Wall-clock milliseconds spent inside `read()` calls. */
  ms: number;
}

/** Options of {@linkcode FlashReader.open}. */
export interface FlashReaderOptions {
  /** How many reads are kept in flight at once (one file handle each). Default 32. */
  depth?: number;
  /** Requests longer than this are split into chunks of this size. Default 1 MiB. */
  maxChunkBytes?: number;
}

// ---------------------------------------------------------------------------
// The reader

/**
 * Issues batches of positioned reads against one file with many reads in flight.
 *
 * @example Reading two ranges of a file
 * ```ts
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
 * console.assert(dest.join() === "6,7,1,2");
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
  /** Cumulative statistics. */
  readonly stats: ReadStats = { bytes: 0, reads: 0, ms: 0 };

  private handles: Deno.FsFile[];
  private closed = false;
  // Work queue of one read() call, shared by the in-flight workers.
  private batch: ReadBatch | null = null;
  private nextRequest = 0;
  private nextChunkStart = 0;

  private constructor(path: string, fileSize: number, handles: Deno.FsFile[], maxChunk: number) {
    this.path = path;
    this.fileSize = fileSize;
    this.handles = handles;
    this.depth = handles.length;
    this.maxChunkBytes = maxChunk;
  }

  /** Open `path` with `options.depth` handles. */
  static async open(path: string, options: FlashReaderOptions = {}): Promise<FlashReader> {
    const depth = options.depth ?? 32;
    const maxChunk = options.maxChunkBytes ?? (1 << 20);
    if (!Number.isInteger(depth) || depth < 1 || depth > 1024) {
      throw new FlashlmError(`reader depth must be an integer in [1, 1024], got ${depth}`, {
        kind: "usage",
      });
    }
    const handles: Deno.FsFile[] = [];
    let fileSize = 0;
    try {
      for (let i = 0; i < depth; i++) handles.push(await Deno.open(path, { read: true }));
      fileSize = (await handles[0].stat()).size;
    } catch (e) {
      for (const h of handles) h.close();
      throw new FlashlmError(`cannot open for reading (${(e as Error).message})`, {
        file: path,
        kind: "io",
        cause: e,
      });
    }
    return new FlashReader(path, fileSize, handles, maxChunk);
  }

  /**
   * Perform every request of `batch`, `depth` at a time, and resolve when all bytes
   * are in their destinations. A request beyond the end of the file is an error.
   */
  async read(batch: ReadBatch): Promise<void> {
    if (this.closed) throw new FlashlmError("reader is closed", { file: this.path, kind: "io" });
    if (this.batch !== null) {
      throw new FlashlmError("read() called while another read() is running", {
        file: this.path,
        kind: "io",
      });
    }
    for (let i = 0; i < batch.count; i++) {
      const end = batch.offsets[i] + batch.lengths[i];
      if (end > this.fileSize) {
        throw new FlashlmError(
          `read of ${batch.lengths[i]} bytes at offset ${
            batch.offsets[i]
          } is past the end of the file (${this.fileSize} bytes)`,
          { file: this.path },
        );
      }
    }
    const t0 = performance.now();
    this.batch = batch;
    this.nextRequest = 0;
    this.nextChunkStart = 0;
    try {
      const workers: Promise<void>[] = [];
      for (let w = 0; w < this.depth; w++) workers.push(this.worker(this.handles[w]));
      await Promise.all(workers);
    } finally {
      this.batch = null;
    }
    this.stats.bytes += batch.totalBytes;
    this.stats.ms += performance.now() - t0;
  }

  /** One in-flight lane: takes the next chunk of work until none is left. */
  private async worker(handle: Deno.FsFile): Promise<void> {
    const batch = this.batch!;
    while (this.nextRequest < batch.count) {
      // Take the next chunk (synchronously, so lanes never take the same one).
      const i = this.nextRequest;
      const start = this.nextChunkStart;
      const length = Math.min(this.maxChunkBytes, batch.lengths[i] - start);
      if (start + length >= batch.lengths[i]) {
        this.nextRequest++;
        this.nextChunkStart = 0;
      } else {
        this.nextChunkStart = start + length;
      }
      if (length === 0) continue;
      const destStart = batch.destOffsets[i] + start;
      await this.readFully(
        handle,
        batch.offsets[i] + start,
        batch.dests[i].subarray(destStart, destStart + length),
      );
    }
  }

  /** Positioned read that loops on short reads. */
  private async readFully(handle: Deno.FsFile, offset: number, dest: Uint8Array): Promise<void> {
    await handle.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    while (done < dest.length) {
      const n = await handle.read(dest.subarray(done));
      this.stats.reads++;
      if (n === null || n === 0) {
        throw new FlashlmError(
          `unexpected end of file reading ${dest.length} bytes at offset ${offset}`,
          { file: this.path, kind: "io" },
        );
      }
      done += n;
    }
  }

  /** Close every handle. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.handles) h.close();
  }
}
