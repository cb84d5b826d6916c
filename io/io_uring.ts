/**
 * A small io_uring ring for positioned reads, in TypeScript over Deno FFI to libc.
 *
 * io_uring (Linux 5.1+) is a pair of ring buffers shared between a process and the
 * kernel. The process writes read requests ("submission queue entries", SQEs) into the
 * submission queue (SQ) and tells the kernel how many with one `io_uring_enter` system
 * call; the kernel writes one "completion queue entry" (CQE) per finished request into
 * the completion queue (CQ). Many reads can be in flight on one file descriptor, and one
 * system call can both submit new reads and wait for finished ones.
 *
 * No C is involved: libc's `syscall()` makes the io_uring system calls
 * (`io_uring_setup` = 425, `io_uring_enter` = 426, `io_uring_register` = 427, the same
 * on x86_64 and aarch64), `mmap` maps the rings into this process, and typed-array
 * views over that memory (`Deno.UnsafePointerView.getArrayBuffer`) read and write
 * them. The layout comments below name every field after `<linux/io_uring.h>`.
 * `io/read_backends.ts` (backend `io-uring`) is the user; this file knows nothing of
 * the flash reader.
 *
 * ```
 *   user space                                 kernel
 *   ----------                                 ------
 *   SQE array  [sqe 0][sqe 1]...[sqe n-1]  <-- read by the kernel at io_uring_enter
 *   SQ ring    head (kernel) tail (us) array[i] = index of the i-th SQE to submit
 *   CQ ring    head (us)     tail (kernel)     cqes[i] = { user_data, res, flags }
 * ```
 *
 * Who writes what: we own the SQ tail and the CQ head, the kernel owns the SQ head and
 * the CQ tail. A ring index is a free-running 32-bit counter; the slot is
 * `index & ring_mask`.
 *
 * @module
 */

import { ffiAllowed, runtimeName } from "./runtime.ts";

// ---------------------------------------------------------------------------
// Constants from <linux/io_uring.h>, <linux/fs.h> and <sys/mman.h>

const SYS_IO_URING_SETUP = 425n; // x86_64 and aarch64 (asm-generic numbering)
const SYS_IO_URING_ENTER = 426n;
const SYS_IO_URING_REGISTER = 427n;

const IORING_OFF_SQ_RING = 0; // mmap offset of the SQ ring (and, with SINGLE_MMAP, the CQ ring)
const IORING_OFF_CQ_RING = 0x8000000; // mmap offset of the CQ ring
const IORING_OFF_SQES = 0x10000000; // mmap offset of the SQE array

const IORING_FEAT_SINGLE_MMAP = 1 << 0; // SQ and CQ rings share one mapping (5.4+)
const IORING_ENTER_GETEVENTS = 1 << 0; // io_uring_enter also waits for min_complete CQEs
const IORING_OP_READ = 22; // read(2)/pread(2) into one buffer (5.6+)
const IOSQE_ASYNC = 1 << 4; // sqe->flags: issue from an io-wq worker thread, never inline (5.6+)
const RWF_NOWAIT = 0x08; // sqe->rw_flags: fail with -EAGAIN rather than wait for the disk
const IORING_REGISTER_IOWQ_MAX_WORKERS = 19; // io_uring_register opcode (5.15+)

const PROT_READ = 1, PROT_WRITE = 2;
const MAP_SHARED = 0x01, MAP_POPULATE = 0x8000;

/** `struct io_uring_params`: 120 bytes, filled in by `io_uring_setup`. */
const PARAMS = {
  size: 120,
  sqEntries: 0, // __u32 sq_entries: SQ slots (a power of two)
  cqEntries: 4, // __u32 cq_entries: CQ slots (twice sq_entries by default)
  flags: 8, // __u32 flags: IORING_SETUP_* (in)
  features: 20, // __u32 features: IORING_FEAT_* (out)
  sqOff: 40, // struct io_sqring_offsets sq_off (below)
  cqOff: 80, // struct io_cqring_offsets cq_off (below)
} as const;

/** `struct io_sqring_offsets`: where each SQ ring field is, in bytes from the SQ ring's start. */
const SQ_OFF = {
  head: 0, // __u32 head: next SQ entry the kernel consumes
  tail: 4, // __u32 tail: one past the last entry we published
  ringMask: 8, // __u32 ring_mask: sq_entries - 1
  ringEntries: 12, // __u32 ring_entries
  flags: 16, // __u32 flags: IORING_SQ_* (need wakeup with SQPOLL, CQ overflow)
  dropped: 20, // __u32 dropped: invalid entries the kernel skipped
  array: 24, // __u32 array: offset of __u32 array[sq_entries], SQE index per SQ slot
} as const;

/** `struct io_cqring_offsets`: where each CQ ring field is, in bytes from the CQ ring's start. */
const CQ_OFF = {
  head: 0, // __u32 head: next CQE we consume
  tail: 4, // __u32 tail: one past the last CQE the kernel posted
  ringMask: 8, // __u32 ring_mask: cq_entries - 1
  ringEntries: 12, // __u32 ring_entries
  overflow: 16, // __u32 overflow: CQEs lost because the CQ was full
  cqes: 20, // __u32 cqes: offset of struct io_uring_cqe cqes[cq_entries]
} as const;

/**
 * `struct io_uring_sqe`: 64 bytes = 16 `__u32` words. The fields a read uses, as word
 * indices (64-bit fields are two words, low word first: both CPUs are little-endian).
 */
const SQE = {
  words: 16,
  opcode: 0, // __u8 opcode (byte 0); __u8 flags (1); __u16 ioprio (2): word 0
  fd: 1, // __s32 fd
  off: 2, // __u64 off: file offset (words 2-3)
  addr: 4, // __u64 addr: buffer address (words 4-5)
  len: 6, // __u32 len: buffer length
  rwFlags: 7, // __kernel_rwf_t rw_flags: RWF_* (0)
  userData: 8, // __u64 user_data: copied to the CQE (words 8-9)
  // words 10-15: buf_index, personality, file_index, addr3, pad: all 0 for a plain read
} as const;

/** `struct io_uring_cqe`: 16 bytes = 4 `__u32` words. */
const CQE = {
  words: 4,
  userData: 0, // __u64 user_data: the SQE's (words 0-1)
  res: 2, // __s32 res: bytes read, or -errno
  flags: 3, // __u32 flags: IORING_CQE_F_*
} as const;

const TWO_32 = 2 ** 32;

// ---------------------------------------------------------------------------
// libc through FFI

/**
 * The libc functions the ring needs. `syscall` is variadic in C; glibc's is a few
 * assembly instructions that move its arguments, as 64-bit registers, into the system
 * call registers, so binding it with fixed integer parameters calls it correctly on
 * x86_64 and aarch64. The system call number is 64-bit; the kernel truncates the
 * 32-bit arguments (`unsigned int fd`, `u32 to_submit`, ...) to 32 bits itself, so
 * they are bound as `u32` and passed as plain numbers. `io_uring_enter` is bound
 * twice: `enterWait` runs on Deno's blocking thread pool (a promise; the event loop
 * keeps running while it waits), `enter` on the calling thread.
 */
const SYMBOLS = {
  // long syscall(SYS_io_uring_setup, u32 entries, struct io_uring_params *p): a ring fd or -1
  setup: { name: "syscall", parameters: ["i64", "u32", "buffer"], result: "i64" },
  // long syscall(SYS_io_uring_enter, int fd, u32 to_submit, u32 min_complete, u32 flags,
  //              const void *argp, size_t argsz): SQEs consumed, or -1
  enter: {
    name: "syscall",
    parameters: ["i64", "u32", "u32", "u32", "u32", "pointer", "u64"],
    result: "i64",
  },
  enterWait: {
    name: "syscall",
    parameters: ["i64", "u32", "u32", "u32", "u32", "pointer", "u64"],
    result: "i64",
    nonblocking: true,
  },
  // long syscall(SYS_io_uring_register, int fd, u32 opcode, void *arg, u32 nr_args)
  register: { name: "syscall", parameters: ["i64", "u32", "u32", "buffer", "u32"], result: "i64" },
  // void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  // int munmap(void *addr, size_t len)
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  // int close(int fd)
  close: { parameters: ["i32"], result: "i32" },
  // int *__errno_location(void): this thread's errno (glibc)
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let library: Deno.DynamicLibrary<typeof SYMBOLS> | null = null;

function sys(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  library ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return library.symbols;
}

/** errno of the last failed libc call made on this (the JavaScript) thread. */
function errno(): number {
  const p = sys().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** A few errno names for messages. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  14: "EFAULT",
  16: "EBUSY",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  38: "ENOSYS",
  95: "EOPNOTSUPP",
};

/**
 * `errno` as `"ENOSYS (38)"`, or `"errno 61"` for one without a name here.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { errnoName } from "./io_uring.ts";
 * assert.equal(errnoName(38), "ENOSYS (38)");
 * ```
 */
export function errnoName(errno: number): string {
  const name = ERRNO_NAMES[errno];
  return name ? `${name} (${errno})` : `errno ${errno}`;
}

/** A pointer object's address as a number (user-space addresses are < 2^53). */
function address(p: Deno.PointerValue): number {
  return Number(Deno.UnsafePointer.value(p));
}

// ---------------------------------------------------------------------------
// The ring

/**
 * One io_uring instance for reads: queue reads with {@linkcode IoUring.queueRead},
 * submit them with {@linkcode IoUring.submit}, wait with {@linkcode IoUring.wait} (or
 * submit and wait in one call on this thread: {@linkcode IoUring.submitAndWaitSync}),
 * take finished ones with {@linkcode IoUring.reap}. One user at a time.
 *
 * Memory ordering. The kernel reads the SQ tail we write and writes the CQ tail we
 * read, possibly from another CPU. The rule (liburing's) is: load the kernel's index
 * with acquire ordering before reading the entries below it, and store our index with
 * release ordering after writing the entries below it. `Atomics.load`/`Atomics.store`
 * on the ring's `Uint32Array`s give that (sequentially consistent, which is
 * stronger): on aarch64 they compile to `ldar`/`stlr`, on x86_64 to a plain `mov` and
 * an `xchg`. On x86_64 plain typed-array accesses would do too: its memory model
 * (TSO) never reorders a load with an earlier load nor a store with an earlier store,
 * and V8 cannot move memory accesses across the FFI calls between them (an opaque
 * call; a system call is moreover a full barrier). Atomics cost nothing measurable
 * here (a few per batch) and keep the code right on aarch64, so they are used. The
 * SQ tail is ordered twice over: without SQPOLL the kernel reads it only inside
 * `io_uring_enter`. The entries themselves are plain reads and writes.
 *
 * @example Reading 4 bytes at offset 2 of a file
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { IoUring, ioUringUnavailable } from "./io_uring.ts";
 * import { cString, libc } from "./runtime.ts";
 * if (ioUringUnavailable() === null) {
 *   const path = await Deno.makeTempFile();
 *   await Deno.writeFile(path, new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]));
 *   const O_RDONLY = 0;
 *   const fd = libc()!.open(cString(path), O_RDONLY);
 *   const ring = IoUring.setup(8);
 *   const dest = new Uint8Array(4);
 *   ring.queueRead(fd, dest, 2, 42);
 *   ring.submit();
 *   await ring.wait(1);
 *   const ids = new Float64Array(8), results = new Int32Array(8);
 *   assert.equal(ring.reap(ids, results), 1);
 *   assert.deepEqual([ids[0], results[0]], [42, 4]); // user data, bytes read (or -errno)
 *   assert.deepEqual([...dest], [2, 3, 4, 5]);
 *   ring.close();
 *   libc()!.close(fd);
 *   await Deno.remove(path);
 * }
 * ```
 */
export class IoUring {
  /** The ring's file descriptor. */
  readonly fd: number;
  /** SQ slots: at most this many reads queued and unsubmitted at once. */
  readonly sqEntries: number;
  /** CQ slots: keep at most this many reads in flight, so no completion is dropped. */
  readonly cqEntries: number;

  private sqRing: Deno.PointerObject; // the SQ ring mapping (also the CQ ring's with SINGLE_MMAP)
  private sqRingBytes: number;
  private cqRing: Deno.PointerObject | null; // the CQ ring's own mapping, or null
  private cqRingBytes: number;
  private sqesMap: Deno.PointerObject; // the SQE array mapping
  private sqesBytes: number;

  private sqHead: Uint32Array; // (1) kernel-owned
  private sqTail: Uint32Array; // (1) ours
  private sqMask: number;
  private sqes: Uint32Array; // (sqEntries, 16) the SQE array
  private cqHead: Uint32Array; // (1) ours
  private cqTail: Uint32Array; // (1) kernel-owned
  private cqMask: number;
  private cqes: Uint32Array; // (cqEntries, 4) the CQE array
  private cqOverflow: Uint32Array; // (1) CQEs the kernel had to drop

  private tail: number; // our copy of the SQ tail, ahead of sqTail by the queued SQEs
  private toSubmit = 0; // SQEs queued since the last io_uring_enter
  private closed = false;

  private constructor(fd: number, params: DataView, singleMmap: boolean) {
    const c = sys();
    this.fd = fd;
    this.sqEntries = params.getUint32(PARAMS.sqEntries, true);
    this.cqEntries = params.getUint32(PARAMS.cqEntries, true);
    const sq = (field: number): number => params.getUint32(PARAMS.sqOff + field, true);
    const cq = (field: number): number => params.getUint32(PARAMS.cqOff + field, true);

    // Ring sizes: the SQ ring ends with its index array, the CQ ring with its CQEs.
    this.sqRingBytes = sq(SQ_OFF.array) + this.sqEntries * 4;
    this.cqRingBytes = cq(CQ_OFF.cqes) + this.cqEntries * CQE.words * 4;
    if (singleMmap) {
      this.sqRingBytes = this.cqRingBytes = Math.max(this.sqRingBytes, this.cqRingBytes);
    }
    this.sqesBytes = this.sqEntries * SQE.words * 4;
    const map = (bytes: number, offset: number): Deno.PointerObject => {
      const p = c.mmap(
        null,
        BigInt(bytes),
        PROT_READ | PROT_WRITE,
        MAP_SHARED | MAP_POPULATE,
        fd,
        BigInt(offset),
      );
      if (p === null || BigInt(Deno.UnsafePointer.value(p)) === 0xffffffffffffffffn) {
        throw new Error(`mmap of the io_uring ring failed (${errnoName(errno())})`);
      }
      return p;
    };
    this.sqRing = map(this.sqRingBytes, IORING_OFF_SQ_RING);
    this.cqRing = null;
    this.sqesMap = this.sqRing; // replaced below; keeps close() sound if a map fails
    try {
      this.cqRing = singleMmap ? null : map(this.cqRingBytes, IORING_OFF_CQ_RING);
      this.sqesMap = map(this.sqesBytes, IORING_OFF_SQES);
    } catch (e) {
      c.munmap(this.sqRing, BigInt(this.sqRingBytes));
      if (this.cqRing) c.munmap(this.cqRing, BigInt(this.cqRingBytes));
      throw e;
    }

    // Views: one ArrayBuffer per mapping, Uint32Array windows onto its fields.
    const sqMem = Deno.UnsafePointerView.getArrayBuffer(this.sqRing, this.sqRingBytes);
    const cqMem = Deno.UnsafePointerView.getArrayBuffer(
      this.cqRing ?? this.sqRing,
      this.cqRingBytes,
    );
    const word = (mem: ArrayBuffer, at: number): Uint32Array => new Uint32Array(mem, at, 1);
    this.sqHead = word(sqMem, sq(SQ_OFF.head));
    this.sqTail = word(sqMem, sq(SQ_OFF.tail));
    this.sqMask = new Uint32Array(sqMem, sq(SQ_OFF.ringMask), 1)[0];
    this.cqHead = word(cqMem, cq(CQ_OFF.head));
    this.cqTail = word(cqMem, cq(CQ_OFF.tail));
    this.cqOverflow = word(cqMem, cq(CQ_OFF.overflow));
    this.cqMask = new Uint32Array(cqMem, cq(CQ_OFF.ringMask), 1)[0];
    this.cqes = new Uint32Array(cqMem, cq(CQ_OFF.cqes), this.cqEntries * CQE.words);
    this.sqes = new Uint32Array(
      Deno.UnsafePointerView.getArrayBuffer(this.sqesMap, this.sqesBytes),
    );
    this.sqes.fill(0);
    // The SQ index array maps SQ slot i to SQE i, once and for all: slot and SQE coincide.
    const array = new Uint32Array(sqMem, sq(SQ_OFF.array), this.sqEntries);
    for (let i = 0; i < this.sqEntries; i++) array[i] = i;
    this.tail = Atomics.load(this.sqTail, 0);
  }

  /**
   * A ring with at least `entries` SQ slots (rounded up to a power of two by the
   * kernel). Throws an `Error` naming the errno when io_uring is unavailable: `ENOSYS`
   * (kernel without it, or a seccomp filter), `EPERM` (`kernel.io_uring_disabled`, or
   * seccomp), `ENOMEM` (locked-memory limit on old kernels).
   */
  static setup(entries: number): IoUring {
    const c = sys();
    const params = new Uint8Array(PARAMS.size); // all zero: no IORING_SETUP_* flags
    const fd = Number(c.setup(SYS_IO_URING_SETUP, entries, params));
    if (fd < 0) throw new Error(`io_uring_setup failed (${errnoName(errno())})`);
    const view = new DataView(params.buffer);
    const singleMmap = (view.getUint32(PARAMS.features, true) & IORING_FEAT_SINGLE_MMAP) !== 0;
    try {
      return new IoUring(fd, view, singleMmap);
    } catch (e) {
      c.close(fd);
      throw e;
    }
  }

  /** SQ slots free for {@linkcode IoUring.queueRead} now. */
  get sqSpace(): number {
    return this.sqEntries - ((this.tail - Atomics.load(this.sqHead, 0)) >>> 0);
  }

  /**
   * Queue a read of `dest.length` bytes (at least 1) from `fd` at `offset` into `dest`;
   * `userData` (an integer below 2^53) comes back with its completion. `dest` must
   * stay alive and unmoved until then. Returns false when the SQ is full.
   *
   * `how` says where the kernel performs the read:
   * - `"inline"`: in `io_uring_enter` when the bytes are in the page cache, else it
   *   starts the disk read and finishes the copy later (io_uring's "async buffered
   *   reads", driven by the submitting thread);
   * - `"cached"`: only from the page cache, in `io_uring_enter`; otherwise the read
   *   completes with -EAGAIN (or short, with the cached part) and starts no disk read
   *   (`RWF_NOWAIT`);
   * - `"worker"`: on one of the ring's io-wq kernel threads, as a blocking `pread`
   *   (`IOSQE_ASYNC`): {@linkcode IoUring.limitWorkers} then bounds how many run at once.
   */
  queueRead(
    fd: number,
    dest: Uint8Array,
    offset: number,
    userData: number,
    how: "inline" | "cached" | "worker" = "inline",
  ): boolean {
    if (this.sqSpace === 0) return false;
    const at = (this.tail & this.sqMask) * SQE.words;
    const sqe = this.sqes;
    const addr = address(Deno.UnsafePointer.of(dest));
    // opcode in byte 0, sqe->flags in byte 1, ioprio 0
    sqe[at + SQE.opcode] = IORING_OP_READ | ((how === "worker" ? IOSQE_ASYNC : 0) << 8);
    sqe[at + SQE.fd] = fd;
    sqe[at + SQE.off] = offset % TWO_32;
    sqe[at + SQE.off + 1] = Math.floor(offset / TWO_32);
    sqe[at + SQE.addr] = addr % TWO_32;
    sqe[at + SQE.addr + 1] = Math.floor(addr / TWO_32);
    sqe[at + SQE.len] = dest.length;
    sqe[at + SQE.rwFlags] = how === "cached" ? RWF_NOWAIT : 0;
    sqe[at + SQE.userData] = userData % TWO_32;
    sqe[at + SQE.userData + 1] = Math.floor(userData / TWO_32);
    this.tail = (this.tail + 1) >>> 0;
    this.toSubmit++;
    return true;
  }

  /** Reads queued by {@linkcode IoUring.queueRead} and not yet submitted. */
  get queued(): number {
    return this.toSubmit;
  }

  /**
   * Submit the queued reads without waiting (on this thread: the kernel only takes the
   * SQEs, it does not wait for them). Reads the kernel did not take (it was busy:
   * `EAGAIN`, `EBUSY`, or a signal: `EINTR`) stay queued for the next call.
   */
  submit(): void {
    if (this.toSubmit > 0) this.enter(0, 0);
  }

  /**
   * Submit the queued reads and wait, on this thread (JavaScript and the event loop
   * stop meanwhile), until at least `minComplete` completions are ready to
   * {@linkcode IoUring.reap}. Returns early on a signal: check what was reaped.
   */
  submitAndWaitSync(minComplete: number): void {
    this.enter(minComplete, minComplete > 0 ? IORING_ENTER_GETEVENTS : 0);
  }

  /**
   * Wait until at least `minComplete` completions are ready to
   * {@linkcode IoUring.reap}, on Deno's blocking thread pool: the event loop keeps
   * running. Submits nothing ({@linkcode IoUring.submit} first). Resolves early on a
   * signal: check what was reaped.
   */
  async wait(minComplete: number): Promise<void> {
    const r = await sys().enterWait(
      SYS_IO_URING_ENTER,
      this.fd,
      0,
      minComplete,
      IORING_ENTER_GETEVENTS,
      null,
      0n,
    );
    // errno belongs to the pool thread that made the call, so it cannot be read here.
    // Ask again on this thread without waiting: a lasting error (a closed ring) shows
    // up there, a passing one (a signal) does not.
    if (Number(r) < 0) this.enter(0, IORING_ENTER_GETEVENTS);
  }

  /** One `io_uring_enter` on this thread that submits what is queued. */
  private enter(minComplete: number, flags: number): void {
    // Publish the SQEs (release: the SQE writes come before the tail store).
    Atomics.store(this.sqTail, 0, this.tail);
    const n = this.toSubmit;
    const r = Number(
      sys().enter(SYS_IO_URING_ENTER, this.fd, n, minComplete, flags, null, 0n),
    );
    if (r >= 0) {
      this.toSubmit = n - r; // the kernel took r SQEs; the rest go with the next call
      return;
    }
    const e = errno();
    if (e === 4 /* EINTR */ || e === 11 /* EAGAIN */ || e === 16 /* EBUSY */) return;
    throw new Error(`io_uring_enter failed (${errnoName(e)})`);
  }

  /**
   * Move up to `userData.length` completions out of the CQ: `userData[i]` is the
   * finished read's user data, `res[i]` its result (bytes read, or -errno). Returns how
   * many. Throws if the kernel ever dropped a completion (more in flight than CQ slots).
   */
  reap(userData: Float64Array, res: Int32Array): number {
    const tail = Atomics.load(this.cqTail, 0); // acquire: the CQEs below it are written
    let head = Atomics.load(this.cqHead, 0);
    let n = 0;
    while (head !== tail && n < userData.length) {
      const at = (head & this.cqMask) * CQE.words;
      userData[n] = this.cqes[at + CQE.userData] + this.cqes[at + CQE.userData + 1] * TWO_32;
      res[n] = this.cqes[at + CQE.res] | 0;
      n++;
      head = (head + 1) >>> 0;
    }
    Atomics.store(this.cqHead, 0, head); // release: we are done reading those CQEs
    if (Atomics.load(this.cqOverflow, 0) !== 0) {
      throw new Error("io_uring completion queue overflowed (completions were lost)");
    }
    return n;
  }

  /**
   * Let at most `n` io-wq worker threads run reads queued `"worker"` at once
   * (`IORING_REGISTER_IOWQ_MAX_WORKERS`, Linux 5.15+; false where refused). The
   * limit covers both of io-wq's worker kinds, "bounded" and "unbounded" (Linux 6.18
   * runs these reads on unbounded workers). The workers belong to the *thread* that
   * submits, not to the ring: every ring this thread submits on shares them, and the
   * last limit set applies to all of them. Lowering the limit stops no worker: those
   * already started keep taking work until they have idled 5 s.
   */
  limitWorkers(n: number): boolean {
    const counts = new Uint32Array([n, n]); // [bounded, unbounded]; the old ones come back here
    const r = sys().register(
      SYS_IO_URING_REGISTER,
      this.fd,
      IORING_REGISTER_IOWQ_MAX_WORKERS,
      new Uint8Array(counts.buffer),
      2,
    );
    return Number(r) >= 0;
  }

  /** Unmap the rings and close the ring. No read may be in flight. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const c = sys();
    c.munmap(this.sqesMap, BigInt(this.sqesBytes));
    if (this.cqRing) c.munmap(this.cqRing, BigInt(this.cqRingBytes));
    c.munmap(this.sqRing, BigInt(this.sqRingBytes));
    c.close(this.fd);
  }
}

// ---------------------------------------------------------------------------
// Can this process use io_uring?

let probed: string | null | undefined;

/**
 * Why io_uring cannot be used here, or `null` when it can: not Linux on x86_64 or
 * aarch64, no FFI permission, or a probe ring that the kernel refuses (`ENOSYS` where
 * a container's seccomp filter blocks it, `EPERM` with `kernel.io_uring_disabled`).
 * The probe sets up and closes a one-slot ring, once per process.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ioUringUnavailable } from "./io_uring.ts";
 * const why = ioUringUnavailable();
 * assert(why === null || why.length > 0);
 * ```
 */
export function ioUringUnavailable(): string | null {
  if (probed !== undefined) return probed;
  if (runtimeName() !== "deno") return (probed = "it needs Deno");
  if (
    Deno.build.os !== "linux" || (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64")
  ) {
    return (probed = "it needs Linux on x86_64 or aarch64");
  }
  if (!ffiAllowed()) return "run Deno with --allow-ffi"; // not cached: it may be granted later
  try {
    IoUring.setup(1).close();
    probed = null;
  } catch (e) {
    probed = `the kernel refuses it: ${(e as Error).message}`;
  }
  return probed;
}
