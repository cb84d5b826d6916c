/**
 * The read backends that call the operating system through Deno FFI (`Deno.dlopen` of
 * libc, see `io/runtime.ts`): `ffi-pread` (one `pread(2)` per read), `ffi-aio` (a whole
 * batch in one glibc `lio_listio` call) and `io-uring` (Linux io_uring, `io/io_uring.ts`).
 * `io/read_backends.ts` chooses between them and the backends that need no FFI, and opens
 * them: each class here has the shape of its `ReadBackend` interface (checked where
 * `openBackend` returns it; this module does not import it, so the two form no cycle).
 *
 * All three open the file with `POSIX_FADV_RANDOM` (no kernel readahead), as fio does for
 * random reads: the reader asks for exactly the bytes it needs.
 *
 * @module
 */

import { FlashlmError } from "./errors.ts";
import { errnoName, IoUring } from "./io_uring.ts";
import { cString, libc } from "./runtime.ts";

// ---------------------------------------------------------------------------
// ffi-pread: libc pread on one descriptor, each call on Deno's blocking thread pool

/** One `pread(2)` through Deno FFI (on its blocking thread pool); bytes read, or an I/O error. */
async function ffiPread(
  fd: number,
  dest: Uint8Array,
  offset: number,
  path: string,
): Promise<number> {
  const n = Number(await libc()!.pread(fd, dest, BigInt(dest.length), BigInt(offset)));
  if (n < 0) {
    throw new FlashlmError(`pread(2) of ${dest.length} bytes at offset ${offset} failed`, {
      file: path,
      kind: "io",
    });
  }
  return n;
}

/** POSIX_FADV_RANDOM: no readahead on this descriptor. */
const POSIX_FADV_RANDOM = 1;

/**
 * `open(path, O_RDONLY)` through FFI for the FFI backends, advised
 * `POSIX_FADV_RANDOM`; the descriptor, or -1.
 *
 * Without the advice, Linux reads ahead on some of these random reads (when the pages
 * just before a read are cached, it looks sequential): measured on a 2 GiB file with a
 * cold cache, the kernel read 3-5% more bytes than it delivered at 32 KiB reads and
 * 8-13% more at 128 KiB (`read_bytes` of `/proc/self/io`), for the same or lower
 * throughput. The reader already reads whole runs and coalesces neighbours, so the
 * kernel's guesses only cost disk time. fio does the same (`fadvise_hint=1`). The
 * advice is per open file, so it changes nothing for other readers of the file.
 */
function ffiOpen(name: Uint8Array): number {
  const c = libc()!;
  const fd = c.open(name, 0 /* O_RDONLY */);
  if (fd >= 0) c.posix_fadvise?.(fd, 0n, 0n, POSIX_FADV_RANDOM); // Linux; a hint, may fail
  return fd;
}

/**
 * `pread(2)` through Deno FFI: positioned, so every lane shares one descriptor.
 *
 * @example Reading 3 bytes at offset 2
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { FfiPreadBackend } from "./ffi_backends.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5]));
 * const file = await FfiPreadBackend.open(path, 2);
 * const dest = new Uint8Array(3);
 * assert.equal(await file.readAt(1, dest, 2), 3);
 * file.close();
 * assert.deepEqual([...dest], [2, 3, 4]);
 * await Deno.remove(path);
 * ```
 */
export class FfiPreadBackend {
  readonly name = "ffi-pread";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  private fd: number;

  private constructor(path: string, fileSize: number, fd: number, lanes: number) {
    this.path = path;
    this.fileSize = fileSize;
    this.fd = fd;
    this.lanes = lanes;
  }

  static async open(path: string, lanes: number): Promise<FfiPreadBackend> {
    const size = (await Deno.stat(path)).size; // also a clear error when missing
    const fd = ffiOpen(cString(path));
    if (fd < 0) throw new Error("open(2) failed");
    return new FfiPreadBackend(path, size, fd, lanes);
  }

  async readAt(_lane: number, dest: Uint8Array, offset: number): Promise<number> {
    return await ffiPread(this.fd, dest, offset, this.path);
  }

  close(): void {
    libc()!.close(this.fd);
  }
}

// ---------------------------------------------------------------------------
// ffi-aio: a whole list of reads in one glibc lio_listio call

/** glibc's `struct aiocb` on 64-bit Linux (x86_64 and aarch64 share it): 168 bytes. */
const AIOCB = {
  size: 168,
  fildes: 0, // int
  lioOpcode: 4, // int: LIO_READ = 0
  buf: 16, // void *
  nbytes: 24, // size_t
  sigevNotify: 44, // aio_sigevent.sigev_notify (int): SIGEV_NONE = 1
  errorCode: 112, // int __error_code: 0 or an errno once complete
  returnValue: 120, // ssize_t __return_value: bytes read
  offset: 128, // off_t
} as const;

/**
 * Whether glibc POSIX AIO can be driven through FFI here (the `ffi-aio` backend).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { aioUsable } from "./ffi_backends.ts";
 * import { libc } from "./runtime.ts";
 * assert.equal(aioUsable(), libc()?.lio_listio != null && Deno.build.os === "linux" &&
 *   (Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64"));
 * ```
 */
export function aioUsable(): boolean {
  const c = libc();
  return c !== null && c.lio_listio !== null && Deno.build.os === "linux" &&
    (Deno.build.arch === "x86_64" || Deno.build.arch === "aarch64");
}

/**
 * glibc POSIX AIO: `lio_listio(LIO_WAIT, ...)` takes a whole batch of reads in one FFI
 * call; glibc's helper threads run them as `pread`s, one thread per descriptor at a
 * time, so `lanes` descriptors give `lanes` reads in flight (like fio's psync with
 * `numjobs = lanes`), and JavaScript is involved once per batch instead of once per read.
 *
 * @example Two reads in one call (where glibc AIO is usable)
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { aioUsable, FfiAioBackend } from "./ffi_backends.ts";
 * if (aioUsable()) {
 *   const path = await Deno.makeTempFile();
 *   await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5]));
 *   const file = await FfiAioBackend.open(path, 2);
 *   const dests = [new Uint8Array(2), new Uint8Array(3)];
 *   const done = new Float64Array(2);
 *   await file.readList(2, dests, new Float64Array([4, 0]), done);
 *   file.close();
 *   assert.deepEqual([...done], [2, 3]);
 *   assert.deepEqual([...dests[0], ...dests[1]], [4, 5, 0, 1, 2]);
 *   await Deno.remove(path);
 * }
 * ```
 */
export class FfiAioBackend {
  readonly name = "ffi-aio";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  private fds: Int32Array; // (lanes)
  private cbs = new Uint8Array(0); // (count, AIOCB.size) the control blocks
  private cbView = new DataView(this.cbs.buffer);
  private list = new BigUint64Array(0); // (count) pointers to the control blocks
  private listBytes = new Uint8Array(0); // the same memory, as the FFI argument

  private constructor(path: string, fileSize: number, fds: Int32Array) {
    this.path = path;
    this.fileSize = fileSize;
    this.fds = fds;
    this.lanes = fds.length;
  }

  static async open(path: string, lanes: number): Promise<FfiAioBackend> {
    const c = libc()!;
    const size = (await Deno.stat(path)).size;
    const fds = new Int32Array(lanes);
    const name = cString(path);
    for (let i = 0; i < lanes; i++) {
      fds[i] = ffiOpen(name);
      if (fds[i] < 0) {
        for (let j = 0; j < i; j++) c.close(fds[j]);
        throw new Error("open(2) failed");
      }
    }
    return new FfiAioBackend(path, size, fds);
  }

  async readList(
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void> {
    if (count === 0) return;
    if (this.list.length < count) this.grow(count);
    const cbs = this.cbView;
    this.cbs.fill(0, 0, count * AIOCB.size);
    const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.cbs)));
    for (let k = 0; k < count; k++) {
      const at = k * AIOCB.size;
      const dest = dests[k];
      cbs.setInt32(at + AIOCB.fildes, this.fds[k % this.lanes], true);
      cbs.setBigUint64(
        at + AIOCB.buf,
        BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(dest))),
        true,
      );
      cbs.setBigUint64(at + AIOCB.nbytes, BigInt(dest.length), true);
      cbs.setInt32(at + AIOCB.sigevNotify, 1, /* SIGEV_NONE */ true);
      cbs.setBigInt64(at + AIOCB.offset, BigInt(offsets[k]), true);
      this.list[k] = base + BigInt(at);
    }
    // LIO_WAIT (0): returns when every read has finished. Its result only says whether
    // all succeeded; each control block says how its read went. `dests` stays
    // referenced by the caller until then, so no destination can be collected.
    await libc()!.lio_listio!(0, this.listBytes.subarray(0, count * 8), count, null);
    for (let k = 0; k < count; k++) {
      const at = k * AIOCB.size;
      const error = cbs.getInt32(at + AIOCB.errorCode, true);
      if (error === 0) {
        done[k] = Number(cbs.getBigInt64(at + AIOCB.returnValue, true));
      } else if (error === 11 /* EAGAIN: not queued */ || error === 4 /* EINTR */) {
        done[k] = 0; // the caller finishes it with readAt
      } else {
        throw new FlashlmError(
          `read of ${dests[k].length} bytes at offset ${offsets[k]} failed (errno ${error})`,
          { file: this.path, kind: "io" },
        );
      }
    }
  }

  private grow(count: number): void {
    const capacity = 2 ** Math.ceil(Math.log2(Math.max(count, 64)));
    this.cbs = new Uint8Array(capacity * AIOCB.size);
    this.cbView = new DataView(this.cbs.buffer);
    this.list = new BigUint64Array(capacity);
    this.listBytes = new Uint8Array(this.list.buffer);
  }

  async readAt(lane: number, dest: Uint8Array, offset: number): Promise<number> {
    return await ffiPread(this.fds[lane], dest, offset, this.path);
  }

  close(): void {
    const c = libc()!;
    for (const fd of this.fds) c.close(fd);
  }
}

// ---------------------------------------------------------------------------
// io-uring: one descriptor, one io_uring ring, `lanes` kernel worker threads

/**
 * The largest io-wq worker limit an `io-uring` backend set on this thread. Workers are
 * per thread (see `IoUring.limitWorkers`) and lowering the limit retires none: idle
 * workers keep taking reads until they have been idle for 5 s. A backend with fewer
 * lanes than this therefore bounds its reads itself ("strict" mode below).
 */
let widestLimit = 0;

/**
 * Linux io_uring (`io/io_uring.ts`) on one descriptor. `readList` runs each read in one
 * of two ways:
 *
 * 1. first from the page cache only (`RWF_NOWAIT`), inside the `io_uring_enter` that
 *    submits it: cached bytes are copied at once, without a thread switch;
 * 2. the reads (or the rest of them) that need the disk go to the ring's io-wq kernel
 *    worker threads (`IOSQE_ASYNC`), at most `lanes` at once
 *    (`IORING_REGISTER_IOWQ_MAX_WORKERS`): each worker does a blocking read and takes
 *    the next queued one as soon as it is done, so `lanes` reads stay in flight until
 *    the batch runs out, whatever their speed (work stealing by construction), like
 *    fio's `psync` with `numjobs = lanes`.
 *
 * The ring holds up to 16 × `lanes` reads (a power of two, at most 4096), so a batch
 * rarely needs more than one top-up, and JavaScript only wakes to top up the queue
 * (when `2 × lanes` are left) and at the end of the batch. Measured on 32 KiB and
 * 128 KiB random reads, 16-64 at once, cold cache, against fio's `psync` (2 shared
 * cores, so ±15%): this design 95-120%; io_uring's own asynchronous buffered reads
 * instead of workers (the submitting thread finishes every read, so JavaScript wakes
 * per completion) 60-80%, with a synchronous or a nonblocking wait alike; the same
 * without the cache-first step as fast cold but 10-70% slower warm (4-32 KiB reads).
 *
 * Waiting happens on Deno's blocking thread pool (`nonblocking` FFI), so the event
 * loop keeps running. A synchronous wait was measured too: no faster, as there are
 * only one or two waits per batch.
 *
 * Strict mode: after a backend with more lanes has run on this thread, its extra
 * workers may still be alive, so the ring then holds at most `lanes` worker reads and
 * JavaScript queues the next one as each completes (correct; ~10% slower at depth 16).
 * A process normally has one reader (one depth), and `bench io` measures each io-uring
 * point in a fresh process.
 *
 * Kernels without worker limits (before 5.15) get up to `lanes` reads in the ring at a
 * time instead, completed by io_uring's asynchronous buffered reads.
 *
 * @example Two reads in one call (where the kernel allows io_uring)
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { IoUringBackend } from "./ffi_backends.ts";
 * import { ioUringUnavailable } from "./io_uring.ts";
 * if (ioUringUnavailable() === null) {
 *   const path = await Deno.makeTempFile();
 *   await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5]));
 *   const file = await IoUringBackend.open(path, 2);
 *   const dests = [new Uint8Array(2), new Uint8Array(3)];
 *   const done = new Float64Array(2);
 *   await file.readList(2, dests, new Float64Array([4, 0]), done);
 *   file.close();
 *   assert.deepEqual([...done], [2, 3]);
 *   assert.deepEqual([...dests[0], ...dests[1]], [4, 5, 0, 1, 2]);
 *   await Deno.remove(path);
 * }
 * ```
 */
export class IoUringBackend {
  readonly name = "io-uring";
  readonly path: string;
  readonly fileSize: number;
  readonly lanes: number;
  private fd: number;
  private ring: IoUring;
  private limited = true; // the kernel bounds the io-wq workers (Linux 5.15+)
  private tryCache = true; // try reads from the page cache first (the file system has RWF_NOWAIT)
  private broken: unknown = null; // a failed io_uring_enter: the ring is not used again
  private ids: Float64Array; // (cqEntries) user data of reaped completions
  private results: Int32Array; // (cqEntries) their results
  private retry = new Uint32Array(0); // (reads) reads to queue again on a worker, a FIFO

  // The state of one readList call.
  private next = 0; // next read of the list to queue
  private held = 0; // reads the ring holds: queued, running, or done and not yet reaped
  private onWorkers = 0; // of those, reads queued for a worker (or inline)
  private retryHead = 0;
  private retryTail = 0;
  private failure: FlashlmError | null = null;

  private constructor(path: string, fileSize: number, fd: number, ring: IoUring, lanes: number) {
    this.path = path;
    this.fileSize = fileSize;
    this.fd = fd;
    this.ring = ring;
    this.lanes = lanes;
    this.ids = new Float64Array(ring.cqEntries);
    this.results = new Int32Array(ring.cqEntries);
  }

  static async open(path: string, lanes: number): Promise<IoUringBackend> {
    const size = (await Deno.stat(path)).size;
    const fd = ffiOpen(cString(path));
    if (fd < 0) throw new Error("open(2) failed");
    try {
      const entries = Math.min(4096, 2 ** Math.ceil(Math.log2(16 * lanes)));
      return new IoUringBackend(path, size, fd, IoUring.setup(entries), lanes);
    } catch (e) {
      libc()!.close(fd);
      throw e;
    }
  }

  async readList(
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void> {
    if (this.broken) throw this.broken;
    try {
      await this.run(count, dests, offsets, done);
    } catch (e) {
      // io_uring_enter itself failed (not a read): reads may still be in flight, so the
      // ring is never used again (the reader then fails every batch, as a closed file).
      if (!(e instanceof FlashlmError)) this.broken = e;
      throw e;
    }
  }

  private async run(
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void> {
    const ring = this.ring;
    // The worker limit belongs to this thread, not to the ring (`IoUring.limitWorkers`):
    // set it for every batch, in case another ring (another reader) set its own.
    if (this.limited) this.limited = ring.limitWorkers(this.lanes);
    if (this.limited) widestLimit = Math.max(widestLimit, this.lanes);
    if (this.retry.length < count) this.retry = new Uint32Array(2 ** Math.ceil(Math.log2(count)));
    // How many reads the ring may hold, and how many of them on workers: with bounded
    // workers all of the ring, else (no limits, or strict mode) `lanes`.
    const deep = this.limited && widestLimit <= this.lanes;
    const most = this.limited ? ring.sqEntries : Math.min(this.lanes, ring.sqEntries);
    const mostOnWorkers = deep ? most : this.lanes;
    const topUpAt = deep ? 2 * this.lanes : this.lanes - 1;
    const later = this.limited ? "worker" : "inline";
    done.fill(0, 0, count);
    this.next = 0;
    this.held = 0;
    this.onWorkers = 0;
    this.retryHead = 0;
    this.retryTail = 0;
    this.failure = null;
    for (;;) {
      // Queue reads to retry first, then new ones, while the ring has room. At most
      // 2 × lanes new ones per round: on a cold cache each fails its cache-only try and
      // is queued again for a worker in the next round, so the disk starts at once
      // rather than after the whole list was tried (measured: +5-10% at depth 64).
      let fresh = 0;
      while (this.held < most && this.failure === null) {
        const workerRoom = this.onWorkers < mostOnWorkers;
        let k: number, how: "inline" | "cached" | "worker";
        if (this.retryHead < this.retryTail && workerRoom) {
          k = this.retry[this.retryHead++];
          how = later;
        } else if (this.next < count && fresh < 2 * this.lanes && (this.tryCache || workerRoom)) {
          k = this.next++;
          fresh++;
          how = this.tryCache ? "cached" : later;
          if (dests[k].length === 0) continue;
        } else break;
        const dest = done[k] === 0 ? dests[k] : dests[k].subarray(done[k]); // the rest
        // user data: the read's index, and whether this attempt is cache-only
        const cachedOnly = how === "cached" ? 1 : 0;
        ring.queueRead(this.fd, dest, offsets[k] + done[k], 2 * k + cachedOnly, how);
        this.held++;
        this.onWorkers += 1 - cachedOnly;
      }
      if (this.held === 0) break;
      // Submit. Cache-only reads complete within the call: when some did, queue more.
      ring.submit();
      if (this.collect(dests, offsets, done) > 0 && this.more(count) && this.held < most) continue;
      // Wait until the queue runs low (2 × lanes left, so the workers keep busy while
      // JavaScript tops it up), or for the last reads.
      const submitted = this.held - ring.queued; // the kernel may refuse some (EAGAIN)
      const want = this.more(count) ? Math.max(1, submitted - topUpAt) : submitted;
      await ring.wait(Math.min(want, submitted));
      this.collect(dests, offsets, done);
    }
    if (this.failure) throw this.failure;
  }

  /** Whether reads of this list are left to queue. */
  private more(count: number): boolean {
    return this.failure === null && (this.retryHead < this.retryTail || this.next < count);
  }

  /** Take the finished reads off the ring; returns how many. */
  private collect(dests: Uint8Array[], offsets: Float64Array, done: Float64Array): number {
    const ids = this.ids, results = this.results;
    const n = this.ring.reap(ids, results);
    this.held -= n;
    for (let i = 0; i < n; i++) {
      // r: bytes read, or -errno
      const k = Math.floor(ids[i] / 2), cachedOnly = ids[i] % 2 === 1, r = results[i];
      if (!cachedOnly) this.onWorkers--;
      if (r >= 0) {
        done[k] += r;
        // A "cached" read that found only part of its bytes in the page cache: the rest
        // goes to a worker (r = 0 is the end of the file: the caller reports it).
        if (cachedOnly && r > 0 && done[k] < dests[k].length) this.retry[this.retryTail++] = k;
      } else if (cachedOnly && (r === -11 /* EAGAIN */ || r === -95 /* EOPNOTSUPP */)) {
        this.retry[this.retryTail++] = k; // not in the page cache: a worker reads it
        if (r === -95) this.tryCache = false; // a file system without RWF_NOWAIT (tmpfs)
      } else if (r === -11 /* EAGAIN */ || r === -4 /* EINTR */) {
        // the caller finishes it with readAt
      } else {
        this.failure ??= new FlashlmError(
          `read of ${dests[k].length} bytes at offset ${offsets[k]} failed (${errnoName(-r)})`,
          { file: this.path, kind: "io" },
        );
      }
    }
    return n;
  }

  async readAt(_lane: number, dest: Uint8Array, offset: number): Promise<number> {
    return await ffiPread(this.fd, dest, offset, this.path);
  }

  close(): void {
    this.ring.close();
    libc()!.close(this.fd);
  }
}
