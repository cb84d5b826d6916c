/**
 * Which JavaScript runtime flashlm is running in, and what it may use there.
 *
 * The flash reader has one backend per way of doing a positioned read (see
 * `io/read_backends.ts`); this module answers the questions that choose between
 * them: are we in Deno, Bun or Node, may Deno call C through FFI, and where is libc.
 * It touches no `Deno.*` API unless it is running in Deno, so Bun and Node can load it.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// The runtime

/** The JavaScript runtimes flashlm knows. */
export type RuntimeName = "deno" | "bun" | "node";

/**
 * The runtime this code runs in (Bun and Node both look like Node to libraries; Bun is
 * told apart by its `Bun` global).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { runtimeName } from "./runtime.ts";
 * assert.equal(runtimeName(), "deno");
 * ```
 */
export function runtimeName(): RuntimeName {
  const g = globalThis as Record<string, unknown>;
  if (typeof g.Bun !== "undefined") return "bun";
  if (typeof g.Deno !== "undefined") return "deno";
  return "node";
}

/**
 * Whether Deno's FFI is usable right now: we are in Deno and `--allow-ffi` (or `-A`)
 * was granted. Never prompts.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffiAllowed } from "./runtime.ts";
 * assert.equal(ffiAllowed(), true); // doc examples run with -A, which allows FFI
 * ```
 */
export function ffiAllowed(): boolean {
  if (runtimeName() !== "deno") return false;
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// libc through Deno FFI

/** The C library file to `dlopen` on this operating system (Linux and macOS). */
function libcPath(): string {
  return Deno.build.os === "darwin" ? "/usr/lib/libSystem.B.dylib" : "libc.so.6";
}

/** The libc functions flashlm calls. `pread` runs on Deno's blocking thread pool. */
const LIBC_SYMBOLS = {
  // int open(const char *path, int flags)
  open: { parameters: ["buffer", "i32"], result: "i32" },
  // int close(int fd)
  close: { parameters: ["i32"], result: "i32" },
  // ssize_t pread(int fd, void *buf, size_t count, off_t offset): many in flight at once
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  // int posix_fadvise(int fd, off_t offset, off_t len, int advice): Linux only
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32", optional: true },
  // void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset)
  mmap: {
    parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
    result: "pointer",
    optional: true,
  },
  // int munmap(void *addr, size_t len)
  munmap: { parameters: ["pointer", "usize"], result: "i32", optional: true },
  // int mincore(void *addr, size_t len, unsigned char *vec)
  mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32", optional: true },
  // int getpagesize(void)
  getpagesize: { parameters: [], result: "i32", optional: true },
  // int lio_listio(int mode, struct aiocb *const list[], int nent, struct sigevent *sig):
  // glibc POSIX AIO, a whole list of positioned reads in one call (glibc's own threads)
  lio_listio: {
    parameters: ["i32", "buffer", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
    optional: true,
  },
  // void aio_init(const struct aioinit *init): glibc's AIO thread pool size
  aio_init: { parameters: ["buffer"], result: "void", optional: true },
} as const;

/** The bound libc functions (see {@linkcode libc}). */
export type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

let libcLibrary: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | null = null;

/**
 * libc bound through Deno FFI, opened once per process, or `null` when FFI is not
 * allowed or libc cannot be opened. Optional functions (`posix_fadvise`, `mmap`,
 * `munmap`, `mincore`, `getpagesize`, `lio_listio`, `aio_init`) are `null` where the platform lacks them.
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { ffiAllowed, libc } from "./runtime.ts";
 * const c = libc();
 * assert.equal(c !== null, ffiAllowed() && Deno.build.os !== "windows");
 * ```
 */
export function libc(): Libc | null {
  if (libcLibrary) return libcLibrary.symbols;
  if (!ffiAllowed() || Deno.build.os === "windows") return null;
  try {
    libcLibrary = Deno.dlopen(libcPath(), LIBC_SYMBOLS);
  } catch {
    return null;
  }
  const c = libcLibrary.symbols;
  if (c.aio_init && Deno.build.os === "linux") {
    // struct aioinit { aio_threads, aio_num, 4 unused, aio_idle_time (s), reserved }: room
    // for one thread per read in flight (glibc's default is 20), idle threads exit after 1 s.
    c.aio_init(new Uint8Array(new Int32Array([1024, 1024, 0, 0, 0, 0, 1, 0]).buffer));
  }
  return c;
}

/**
 * `path` as a NUL-terminated C string (for `open`).
 *
 * @example
 * ```ts
 * import { strict as assert } from "node:assert";
 * import { cString } from "./runtime.ts";
 * assert.deepEqual([...cString("ab")], [97, 98, 0]);
 * ```
 */
export function cString(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  const out = new Uint8Array(bytes.length + 1); // (length + 1) with the trailing NUL
  out.set(bytes);
  return out;
}
