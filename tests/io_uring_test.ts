/**
 * The io_uring ring (`io/io_uring.ts`) on its own, and what the `io-uring` reader
 * backend promises beyond the tests every backend runs (`tests/reader_test.ts`): at
 * most `depth` reads at once, and a clear usage error where it cannot work. Deno only;
 * skipped where the kernel refuses io_uring.
 */

import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { IoUring, ioUringUnavailable } from "../io/io_uring.ts";
import { evictFromPageCache } from "../io/page_cache.ts";
import { availableBackends } from "../io/read_backends.ts";
import { FlashReader, ReadBatch } from "../io/reader.ts";
import { cString, libc } from "../io/runtime.ts";
import { Rng } from "../core/sampler.ts";

const unavailable = ioUringUnavailable();
if (unavailable !== null) console.warn(`skipping io_uring tests: ${unavailable}`);
const ignore = unavailable !== null;

const O_RDONLY = 0;
const EBADF = 9, EAGAIN = 11, EOPNOTSUPP = 95;

/** Completions reaped until `n` have come, waiting as needed: [user data, result] pairs. */
async function reapAll(ring: IoUring, n: number): Promise<Map<number, number>> {
  const ids = new Float64Array(ring.cqEntries), results = new Int32Array(ring.cqEntries);
  const got = new Map<number, number>();
  while (got.size < n) {
    await ring.wait(n - got.size);
    const k = ring.reap(ids, results);
    for (let i = 0; i < k; i++) got.set(ids[i], results[i]);
  }
  return got;
}

// ---------------------------------------------------------------------------
// The ring

Deno.test({
  name: "the ring reads the bytes a sequential read sees, in every mode, also past 4 GiB",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-uring-" });
    const path = `${dir}/sparse.bin`;
    try {
      // A sparse 5 GiB file with data at the start and just past 4 GiB (the SQE's file
      // offset is a 64-bit field written as two 32-bit words).
      const head = new Uint8Array(1 << 20).map((_, i) => (i * 31 + 7) & 255);
      const far = 2 ** 32 + 12345;
      const tail = new Uint8Array(100_000).map((_, i) => (i * 17 + 3) & 255);
      {
        using f = await Deno.open(path, { write: true, create: true });
        await f.write(head);
        await f.truncate(5 * 2 ** 30);
        await f.seek(far, Deno.SeekMode.Start);
        await f.write(tail);
      }
      const fd = libc()!.open(cString(path), O_RDONLY);
      assert(fd >= 0);
      const ring = IoUring.setup(16);
      try {
        assert(ring.sqEntries >= 16 && ring.cqEntries >= ring.sqEntries);
        const modes = ["inline", "cached", "worker"] as const;
        const reads: [number, number, Uint8Array][] = []; // offset, length, destination
        for (let k = 0; k < 12; k++) {
          const length = 1 + ((k * 7919) % 60_000);
          const offset = k % 2 === 0 ? (k * 65_537) % (head.length - length) : far + k * 11;
          reads.push([offset, length, new Uint8Array(length)]);
        }
        reads.forEach(([offset, , dest], k) => {
          // user data above 2^32 too: it is a 64-bit field
          assert(ring.queueRead(fd, dest, offset, 2 ** 33 + k, modes[k % 3]));
        });
        assert.equal(ring.queued, reads.length);
        ring.submit();
        assert.equal(ring.queued, 0);
        const got = await reapAll(ring, reads.length);
        reads.forEach(([offset, length, dest], k) => {
          const r = got.get(2 ** 33 + k)!;
          const expected = offset < far
            ? head.subarray(offset, offset + length)
            : tail.subarray(offset - far, offset - far + length);
          if (modes[k % 3] === "cached" && r < 0) {
            // not in the page cache (or a file system without RWF_NOWAIT): no bytes
            assert(r === -EAGAIN || r === -EOPNOTSUPP, `cached read ${k}: ${r}`);
            return;
          }
          assert.equal(r, length, `read ${k} (${modes[k % 3]})`);
          assert.deepEqual(dest, expected, `read ${k} (${modes[k % 3]})`);
        });
      } finally {
        ring.close();
        ring.close(); // twice is harmless
        libc()!.close(fd);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "a cache-only read of bytes not in the page cache fails with EAGAIN, a worker then reads them",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-uring-" });
    const path = `${dir}/data.bin`;
    const bytes = new Uint8Array(1 << 20).map((_, i) => (i * 13) & 255);
    await Deno.writeFile(path, bytes);
    const fd = libc()!.open(cString(path), O_RDONLY);
    const ring = IoUring.setup(4);
    try {
      const expected = bytes.subarray(131_072, 131_072 + 65_536);
      const dest = new Uint8Array(65_536);
      // A cache-only (RWF_NOWAIT) read of evicted pages starts the kernel's readahead of
      // them and fails with EAGAIN; now and then (about 1 in 10 here, measured with
      // mincore: nothing resident before the read, the range resident after) that
      // readahead completes before the kernel looks again and the read succeeds. So:
      // every attempt either fails having written nothing or returns the file's bytes,
      // and within a few evict-and-retry attempts one must fail.
      let evicted: string = "none";
      let failedOnce = false;
      for (let attempt = 0; attempt < 5 && !failedOnce; attempt++) {
        dest.fill(0);
        evicted = await evictFromPageCache(path, "auto");
        ring.queueRead(fd, dest, 131_072, 1, "cached");
        ring.submitAndWaitSync(1); // the synchronous twin of submit() + wait()
        const ids = new Float64Array(8), results = new Int32Array(8);
        assert.equal(ring.reap(ids, results), 1);
        assert.equal(ids[0], 1);
        if (results[0] === -EAGAIN || results[0] === -EOPNOTSUPP) {
          assert(dest.every((b) => b === 0), "a failed cache-only read wrote bytes");
          failedOnce = true;
        } else {
          assert.equal(results[0], dest.length, `cache-only read gave ${results[0]}`);
          assert.deepEqual(dest, expected, "a cache-only read that succeeded gave other bytes");
        }
        if (evicted === "none") break; // nothing evicts here: the pages stayed cached
      }
      if (evicted !== "none") {
        assert(failedOnce, "cache-only reads of an evicted file never failed with EAGAIN");
      }
      dest.fill(0);
      ring.queueRead(fd, dest, 131_072, 2, "worker");
      ring.submit();
      assert.equal((await reapAll(ring, 1)).get(2), dest.length);
      assert.deepEqual(dest, expected);
    } finally {
      ring.close();
      libc()!.close(fd);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "a read on a bad descriptor completes with -EBADF and the ring goes on",
  ignore,
  fn: async () => {
    const ring = IoUring.setup(2);
    try {
      const dest = new Uint8Array(10);
      ring.queueRead(1 << 20, dest, 0, 7); // no such descriptor
      ring.submit();
      assert.equal((await reapAll(ring, 1)).get(7), -EBADF);
      // A full SQ refuses more until the kernel takes them.
      assert(ring.queueRead(1 << 20, dest, 0, 8));
      assert(ring.queueRead(1 << 20, dest, 0, 9));
      assert.equal(ring.queueRead(1 << 20, dest, 0, 10), false);
      ring.submit();
      assert.deepEqual([...(await reapAll(ring, 2)).values()], [-EBADF, -EBADF]);
    } finally {
      ring.close();
    }
  },
});

// ---------------------------------------------------------------------------
// The backend

Deno.test({
  name: "io-uring is offered exactly when io_uring works here, first in line",
  fn: () => {
    const backends = availableBackends();
    assert.equal(backends.includes("io-uring"), unavailable === null);
    if (unavailable === null) assert.equal(backends[0], "io-uring");
  },
});

Deno.test({
  name: "io-uring reads a partly cached file right: cache hits, misses and reads half in cache",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-uring-" });
    const path = `${dir}/data.bin`;
    const size = 8 << 20;
    const bytes = new Uint8Array(size).map((_, i) => (i * 2654435761) >>> 24);
    await Deno.writeFile(path, bytes);
    const rng = new Rng(5);
    const reader = await FlashReader.open(path, { backend: "io-uring", depth: 8, coalesce: false });
    try {
      using file = await Deno.open(path);
      const page = new Uint8Array(4096);
      const dest = new Uint8Array(16 << 20);
      const batch = new ReadBatch();
      for (let round = 0; round < 10; round++) {
        // Empty the cache, then bring back scattered pages: the reads below start, end
        // or lie in cached pages, so cache-only attempts succeed, fail, or stop short.
        await evictFromPageCache(path, "auto");
        for (let p = 0; p < 300; p++) {
          await file.seek(Math.floor(rng.next() * (size / 4096)) * 4096, Deno.SeekMode.Start);
          await file.read(page);
        }
        batch.clear();
        let at = 0;
        for (let k = 0; k < 200; k++) {
          const length = 1 + Math.floor(rng.next() * 100_000);
          const offset = Math.floor(rng.next() * (size - length));
          batch.add(offset, length, dest, at);
          at += length;
        }
        await reader.read(batch);
        for (let k = 0; k < batch.count; k++) {
          const o = batch.offsets[k], l = batch.lengths[k], d = batch.destOffsets[k];
          assert.deepEqual(dest.subarray(d, d + l), bytes.subarray(o, o + l), `round ${round}`);
        }
      }
    } finally {
      reader.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the io-uring backend runs at most depth reads at once (its kernel worker threads)",
  ignore: ignore || Deno.build.os !== "linux",
  fn: async () => {
    // In a child process: io_uring's workers belong to the submitting thread and
    // outlive a ring, so threads of other tests' rings would be counted here.
    const dir = await Deno.makeTempDir({ prefix: "flashlm-uring-" });
    const path = `${dir}/data.bin`;
    try {
      await Deno.writeFile(path, new Uint8Array(32 << 20).map((_, i) => i & 255));
      const reader = new URL("../io/reader.ts", import.meta.url).href;
      const cache = new URL("../io/page_cache.ts", import.meta.url).href;
      const script = `
        import { FlashReader, ReadBatch } from "${reader}";
        import { evictFromPageCache } from "${cache}";
        const depth = 3;
        await evictFromPageCache(${JSON.stringify(path)}, "auto");
        const reader = await FlashReader.open(${
        JSON.stringify(path)
      }, { backend: "io-uring", depth, coalesce: false });
        const workers = () => {
          let n = 0;
          for (const t of Deno.readDirSync("/proc/self/task")) {
            try {
              if (Deno.readTextFileSync("/proc/self/task/" + t.name + "/comm").startsWith("iou-wrk")) n++;
            } catch { /* the thread exited */ }
          }
          return n;
        };
        let most = 0;
        const timer = setInterval(() => { most = Math.max(most, workers()); }, 1);
        const batch = new ReadBatch();
        const dest = new Uint8Array(256 * 16384);
        for (let k = 0; k < 256; k++) batch.add(((k * 677) % 2048) * 16384, 16384, dest, k * 16384);
        await reader.read(batch);
        clearInterval(timer);
        reader.close();
        console.log(JSON.stringify({ most: Math.max(most, workers()), depth }));
      `;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--ext=ts", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert(out.success, new TextDecoder().decode(out.stderr));
      const { most, depth } = JSON.parse(new TextDecoder().decode(out.stdout));
      assert(most <= depth, `${most} io_uring worker threads for depth ${depth}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("forcing io-uring without --allow-ffi is a usage error that says why", async () => {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeFile(path, new Uint8Array(10));
    const reader = new URL("../io/reader.ts", import.meta.url).href;
    const script = `
      import { FlashReader } from "${reader}";
      try {
        await FlashReader.open(${JSON.stringify(path)}, { backend: "io-uring" });
        console.log("opened");
      } catch (e) {
        console.log(JSON.stringify({ kind: e.kind, message: e.message }));
      }
    `;
    const dir = await Deno.makeTempDir();
    const file = `${dir}/child.ts`;
    await Deno.writeTextFile(file, script);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-env", file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    await Deno.remove(dir, { recursive: true });
    const text = new TextDecoder().decode(out.stdout).trim();
    assert(text.startsWith("{"), `child said: ${text} ${new TextDecoder().decode(out.stderr)}`);
    const { kind, message } = JSON.parse(text);
    assert.equal(kind, "usage");
    assert.match(
      message,
      /reader backend "io-uring" is not available in deno \(run Deno with --allow-ffi/,
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name: "an io_uring read error is an io FlashlmError naming the file and the errno",
  ignore,
  fn: async () => {
    // A directory opens for reading but cannot be read: EISDIR from the kernel.
    const dir = await Deno.makeTempDir({ prefix: "flashlm-uring-" });
    await Deno.writeTextFile(`${dir}/${"x".repeat(100)}`, "so the directory has a size");
    try {
      const reader = await FlashReader.open(dir, { backend: "io-uring", depth: 2 });
      try {
        const batch = new ReadBatch();
        const n = Math.min(16, reader.fileSize);
        batch.add(0, n, new Uint8Array(n), 0);
        await assert.rejects(() => reader.read(batch), (e: unknown) => {
          assert(e instanceof FlashlmError);
          assert.equal(e.kind, "io");
          assert.equal(e.file, dir);
          assert.match(e.message, /failed \(EISDIR \(21\)\)/);
          return true;
        });
      } finally {
        reader.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
