/**
 * The flash reader against a plain sequential read of the same file, through every
 * backend. Runs under Deno (`deno test -A tests/reader_test.ts`) and under Bun
 * (`bun test tests/reader_test.ts`, node-fs backend only): it uses `node:fs` for its
 * own files and no `Deno.*` API.
 */

import { strict as assert } from "node:assert";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as os from "node:os";
import { FlashlmError } from "../io/errors.ts";
import {
  availableBackends,
  type BackendName,
  type ReadBackend,
  resolveBackend,
} from "../io/read_backends.ts";
import { FlashReader, ReadBatch } from "../io/reader.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// Portable test registration and helpers

type TestFn = (name: string, fn: () => Promise<void>) => void;
const bunTest = "bun:test"; // not a literal import, so Deno never resolves it
const test: TestFn = typeof Deno !== "undefined"
  ? (name, fn) => Deno.test(name, fn)
  : (await import(bunTest)).test;

/** A temp file of `size` pseudo-random bytes; returns its path and its bytes. */
function randomFile(size: number, seed: number): { dir: string; path: string; bytes: Uint8Array } {
  const dir = fs.mkdtempSync(`${os.tmpdir()}/flashlm-reader-`);
  const path = `${dir}/data.bin`;
  const bytes = new Uint8Array(size); // (size)
  const r = new Rng(seed);
  for (let i = 0; i < size; i++) bytes[i] = (r.next() * 256) | 0;
  fs.writeFileSync(path, bytes);
  return { dir, path, bytes: new Uint8Array(fs.readFileSync(path)) }; // the sequential read
}

function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

async function rejectsWith(
  fn: () => Promise<unknown>,
  kind: string,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(fn, (e: unknown) => {
    assert(e instanceof FlashlmError, `expected a FlashlmError, got ${e}`);
    assert.equal(e.kind, kind);
    assert.match(e.message, pattern);
    return true;
  });
}

/**
 * A batch of `n` random requests over a file of `size` bytes: mixed sizes (a few
 * bytes to a few hundred KiB), some overlapping earlier ones, some ending exactly at
 * the end of the file, some empty, some adjacent in the file and in the destination,
 * all packed into one destination (in shuffled order). Returns the bytes needed.
 */
function randomBatch(
  batch: ReadBatch,
  dest: Uint8Array,
  n: number,
  size: number,
  r: Rng,
): number {
  batch.clear();
  let at = 0;
  for (let k = 0; k < n; k++) {
    const kind = r.next();
    let length: number;
    if (kind < 0.6) length = 1 + Math.floor(r.next() * 4096);
    else if (kind < 0.95) length = 4096 + Math.floor(r.next() * 60000);
    else length = 65536 + Math.floor(r.next() * 300_000);
    length = Math.min(length, size);
    let offset: number;
    const where = r.next();
    if (where < 0.05) offset = size - length; // ends exactly at EOF
    else if (where < 0.2 && k > 0) {
      // overlaps (or touches) the previous request
      const prev = batch.offsets[k - 1], prevLength = batch.lengths[k - 1];
      offset = Math.min(size - length, prev + Math.floor(r.next() * (prevLength + 1)));
    } else if (where < 0.3 && k > 0) {
      // right after the previous request, in the file and in the destination
      offset = Math.min(size - length, batch.offsets[k - 1] + batch.lengths[k - 1]);
    } else offset = Math.floor(r.next() * (size - length + 1));
    if (r.next() < 0.01) length = 0;
    if (at + length > dest.length) break;
    batch.add(offset, length, dest, at);
    at += length;
  }
  return at;
}

function checkBatch(batch: ReadBatch, dest: Uint8Array, file: Uint8Array, label: string): void {
  for (let i = 0; i < batch.count; i++) {
    const o = batch.offsets[i], l = batch.lengths[i], d = batch.destOffsets[i];
    if (Buffer.compare(dest.subarray(d, d + l), file.subarray(o, o + l)) === 0) continue;
    let j = 0;
    while (dest[d + j] === file[o + j]) j++;
    assert.fail(`${label}: request ${i} (${l} bytes at ${o}) differs at byte ${j}`);
  }
}

const FILE_SIZE = 8 << 20; // 8 MiB
const BACKENDS = availableBackends();

// ---------------------------------------------------------------------------
// Every byte, every backend

for (const backend of BACKENDS) {
  test(`${backend}: 10,000 random reads at depth 64 equal a sequential read of the file`, async () => {
    const { dir, path, bytes } = randomFile(FILE_SIZE, 1);
    // Small chunks and a wide gap, so splitting, coalescing and scattering all happen.
    const reader = await FlashReader.open(path, {
      backend,
      depth: 64,
      maxChunkBytes: 128 << 10,
      coalesceGapBytes: 8192,
    });
    try {
      assert.equal(reader.backend, backend);
      assert.equal(reader.fileSize, FILE_SIZE);
      const dest = new Uint8Array(64 << 20); // (64 MiB) all requests of one batch, packed
      const batch = new ReadBatch(16);
      const r = new Rng(42);
      let reads = 0, atEof = 0, delivered = 0;
      while (reads < 10_000) {
        dest.fill(0, 0, randomBatch(batch, dest, 1000, FILE_SIZE, r));
        await reader.read(batch);
        checkBatch(batch, dest, bytes, backend);
        reads += batch.count;
        delivered += batch.totalBytes;
        for (let i = 0; i < batch.count; i++) {
          if (batch.offsets[i] + batch.lengths[i] === FILE_SIZE) atEof++;
        }
      }
      assert(atEof > 100, `only ${atEof} reads ended at EOF`);
      assert.equal(reader.stats.requests, reads);
      assert.equal(reader.stats.bytes, delivered);
      // Overlapping and nearby requests were merged: fewer reads than requests.
      assert(reader.stats.reads < reads, `${reader.stats.reads} reads for ${reads} requests`);
    } finally {
      reader.close();
      removeDir(dir);
    }
  });
}

test("every backend delivers the same bytes for the same batches", async () => {
  const { dir, path, bytes } = randomFile(1 << 20, 2);
  const results: Uint8Array[] = [];
  try {
    for (const backend of BACKENDS) {
      const reader = await FlashReader.open(path, { backend, depth: 8 });
      const dest = new Uint8Array(8 << 20);
      const batch = new ReadBatch();
      randomBatch(batch, dest, 300, bytes.length, new Rng(3));
      await reader.read(batch);
      reader.close();
      checkBatch(batch, dest, bytes, backend);
      results.push(dest);
    }
    for (let b = 1; b < results.length; b++) {
      assert(
        Buffer.compare(results[0], results[b]) === 0,
        `${BACKENDS[b]} differs from ${BACKENDS[0]}`,
      );
    }
  } finally {
    removeDir(dir);
  }
});

// ---------------------------------------------------------------------------
// Coalescing

test("coalescing never changes the bytes delivered (vs. no coalescing), at any gap", async () => {
  const { dir, path, bytes } = randomFile(2 << 20, 4);
  try {
    const backend = resolveBackend("auto");
    const plain = await FlashReader.open(path, {
      backend,
      depth: 16,
      coalesce: false,
      maxChunkBytes: 256 << 10,
    });
    const expected = new Uint8Array(16 << 20);
    const got = new Uint8Array(16 << 20);
    const batch = new ReadBatch();
    for (const gap of [0, 100, 4096, 65536, 1 << 20]) {
      const merging = await FlashReader.open(path, {
        backend,
        depth: 16,
        coalesceGapBytes: gap,
        maxChunkBytes: 256 << 10,
      });
      const plainReadsBefore = plain.stats.reads;
      for (let round = 0; round < 5; round++) {
        randomBatch(batch, expected, 400, bytes.length, new Rng(100 + round));
        expected.fill(0);
        await plain.read(batch);
        for (let i = 0; i < batch.count; i++) batch.dests[i] = got;
        got.fill(0);
        await merging.read(batch);
        assert(Buffer.compare(expected, got) === 0, `gap ${gap}, round ${round}: bytes differ`);
        for (let i = 0; i < batch.count; i++) batch.dests[i] = expected;
        checkBatch(batch, expected, bytes, `gap ${gap}`);
      }
      const plainReads = plain.stats.reads - plainReadsBefore;
      assert(merging.stats.reads < plainReads, `gap ${gap}: coalescing merged nothing`);
      merging.close();
    }
    plain.close();
  } finally {
    removeDir(dir);
  }
});

test("coalescing turns evenly spaced requests into one read and counts the gap bytes", async () => {
  const { dir, path, bytes } = randomFile(1 << 20, 5);
  try {
    const n = 100, length = 1000, gap = 100;
    const dest = new Uint8Array(n * length);
    const batch = new ReadBatch();
    for (let i = n - 1; i >= 0; i--) batch.add(i * (length + gap), length, dest, i * length); // reversed
    const reader = await FlashReader.open(path, { depth: 4, coalesceGapBytes: gap });
    await reader.read(batch);
    reader.close();
    checkBatch(batch, dest, bytes, "spaced");
    assert.equal(reader.stats.reads, 1);
    assert.equal(reader.stats.bytes, n * length);
    assert.equal(reader.stats.diskBytes, n * length + (n - 1) * gap);

    // One byte wider than the threshold: nothing merges.
    const strict = await FlashReader.open(path, { depth: 4, coalesceGapBytes: gap - 1 });
    await strict.read(batch);
    strict.close();
    assert.equal(strict.stats.reads, n);
    assert.equal(strict.stats.diskBytes, n * length);
  } finally {
    removeDir(dir);
  }
});

test("contiguous requests into one contiguous destination are read straight into it in chunks", async () => {
  const { dir, path, bytes } = randomFile(1 << 20, 6);
  try {
    const dest = new Uint8Array(bytes.length);
    const batch = new ReadBatch();
    for (let i = 0; i < 256; i++) batch.add(i * 4096, 4096, dest, i * 4096);
    const reader = await FlashReader.open(path, {
      depth: 8,
      coalesceGapBytes: 0,
      maxChunkBytes: 64 << 10,
    });
    await reader.read(batch);
    reader.close();
    assert(Buffer.compare(dest, bytes) === 0);
    assert.equal(reader.stats.reads, bytes.length / (64 << 10)); // one read per chunk
    assert.equal(reader.stats.diskBytes, bytes.length);
  } finally {
    removeDir(dir);
  }
});

// ---------------------------------------------------------------------------
// Short reads and errors

/** An in-memory backend that returns at most a few bytes per read (with `readList` if `list`). */
function stingyBackend(
  data: Uint8Array,
  lanes: number,
  r: Rng,
  list: boolean,
): ReadBackend {
  const inFlight = new Uint8Array(lanes);
  const readList = async (
    count: number,
    dests: Uint8Array[],
    offsets: Float64Array,
    done: Float64Array,
  ): Promise<void> => {
    await Promise.resolve();
    for (let k = 0; k < count; k++) {
      const n = Math.min(dests[k].length, Math.floor(r.next() * 2 * dests[k].length)); // often short, maybe 0
      dests[k].set(data.subarray(offsets[k], offsets[k] + n));
      done[k] = n;
    }
  };
  return {
    ...(list ? { readList } : {}),
    name: "stingy",
    path: "memory",
    fileSize: data.length,
    lanes,
    readAt: async (lane, dest, offset) => {
      assert.equal(inFlight[lane], 0, `lane ${lane} has two reads in flight`);
      inFlight[lane] = 1;
      await Promise.resolve(); // let the other lanes run
      inFlight[lane] = 0;
      const n = Math.min(dest.length, data.length - offset, 1 + Math.floor(r.next() * 700));
      dest.set(data.subarray(offset, offset + n));
      return n;
    },
    close: () => {},
  };
}

for (const list of [false, true]) {
  test(`short reads are retried until every byte is in place (${list ? "list" : "lane"} backend)`, async () => {
    const { dir, bytes } = randomFile(256 << 10, 7);
    removeDir(dir);
    const reader = FlashReader.fromBackend(stingyBackend(bytes, 8, new Rng(8), list), {
      coalesceGapBytes: 64,
    });
    const dest = new Uint8Array(1 << 20);
    const batch = new ReadBatch();
    randomBatch(batch, dest, 200, bytes.length, new Rng(9));
    await reader.read(batch);
    checkBatch(batch, dest, bytes, "stingy");
    assert(reader.stats.reads > reader.stats.requests, "no short reads happened");
    assert.equal(reader.stats.bytes, batch.totalBytes);
  });
}

for (const backend of BACKENDS) {
  test(`${backend}: reads past the end are a FlashlmError and a file truncated under the reader an io one`, async () => {
    const { dir, path } = randomFile(100_000, 10);
    const reader = await FlashReader.open(path, { backend, depth: 4 });
    try {
      const dest = new Uint8Array(200_000);
      const batch = new ReadBatch();
      batch.add(0, 10, dest, 0);
      batch.add(99_999, 2, dest, 10); // one byte past the end
      await rejectsWith(
        () => reader.read(batch),
        "format",
        /past the end of the file \(100000 bytes\)/,
      );
      assert.equal(reader.stats.reads, 0);

      batch.clear();
      batch.add(100_000, 1, dest, 0); // starts at the end
      await rejectsWith(() => reader.read(batch), "format", /past the end/);

      fs.truncateSync(path, 50_000);
      batch.clear();
      batch.add(40_000, 20_000, dest, 0);
      await rejectsWith(() => reader.read(batch), "io", /unexpected end of file/);

      batch.clear();
      batch.add(0, 100, dest, 0); // the reader still works afterwards
      await reader.read(batch);
    } finally {
      reader.close();
      removeDir(dir);
    }
  });
}

for (const backend of BACKENDS) {
  test(`${backend}: a read the operating system refuses is an io FlashlmError naming the file`, async () => {
    // A directory opens for reading, but reading it fails (EISDIR).
    const dir = fs.mkdtempSync(`${os.tmpdir()}/flashlm-reader-`);
    fs.writeFileSync(`${dir}/${"x".repeat(100)}`, "so that the directory has a size");
    try {
      const reader = await FlashReader.open(dir, { backend, depth: 4 });
      try {
        const n = Math.min(16, reader.fileSize);
        const batch = new ReadBatch();
        batch.add(0, n, new Uint8Array(n), 0);
        await rejectsWith(() => reader.read(batch), "io", /failed/);
        await rejectsWith(() => reader.read(batch), "io", new RegExp(`^${dir}: `));
      } finally {
        reader.close();
      }
    } finally {
      removeDir(dir);
    }
  });
}

test("bad requests, bad options and misuse are clear usage errors", async () => {
  const { dir, path } = randomFile(4096, 11);
  try {
    const reader = await FlashReader.open(path, { depth: 2 });
    const dest = new Uint8Array(100);
    const batch = new ReadBatch();
    batch.add(-1, 10, dest, 0);
    await rejectsWith(() => reader.read(batch), "usage", /bad offset -1/);
    batch.clear();
    batch.add(0, 10, dest, 95);
    await rejectsWith(() => reader.read(batch), "usage", /does not fit its destination/);
    batch.clear();
    batch.add(0, 10, dest, 0);
    const first = reader.read(batch);
    await rejectsWith(() => reader.read(batch), "usage", /while another read\(\) is running/);
    await first;
    reader.close();
    await rejectsWith(() => reader.read(batch), "io", /reader is closed/);

    await rejectsWith(() => FlashReader.open(path, { depth: 0 }), "usage", /depth/);
    await rejectsWith(
      () => FlashReader.open(path, { coalesceGapBytes: -5 }),
      "usage",
      /coalesceGapBytes/,
    );
    await rejectsWith(
      () => FlashReader.open(path, { backend: "nope" as BackendName }),
      "usage",
      /unknown reader backend "nope"/,
    );
    await rejectsWith(
      () => FlashReader.open(`${dir}/missing.bin`),
      "io",
      /missing\.bin: cannot open/,
    );
  } finally {
    removeDir(dir);
  }
});
