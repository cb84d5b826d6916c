import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { atomicWriteFile, readExactly, writeAll } from "../io/atomic_write.ts";
import { crc32, crc32Naive } from "../io/crc32.ts";
import { Rng } from "../core/sampler.ts";

// ---------------------------------------------------------------------------
// Helpers

/** `n` bytes drawn from `rng`: the same seed gives the same bytes. */
function randomBytes(n: number, rng: Rng): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng.next() * 256);
  return out;
}

// ---------------------------------------------------------------------------
// atomicWriteFile

Deno.test("atomicWriteFile creates the file and leaves no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.bin`;
    const bytes = new Uint8Array([1, 2, 3, 4, 5]);
    await atomicWriteFile(path, (file) => writeAll(file, bytes));
    assert.deepEqual(await Deno.readFile(path), bytes);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["out.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("atomicWriteFile replaces existing content", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/out.bin`;
    await Deno.writeFile(path, new Uint8Array(100).fill(9));
    await atomicWriteFile(path, (file) => writeAll(file, new Uint8Array([7])));
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([7]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("atomicWriteFile keeps the old content and removes the temp file when the writer throws", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/keep.bin`;
    const old = new Uint8Array([42, 43, 44]);
    await Deno.writeFile(path, old);
    const boom = new Error("writer failed halfway");
    await assert.rejects(
      atomicWriteFile(path, async (file) => {
        await writeAll(file, new Uint8Array(1000).fill(1));
        throw boom;
      }),
      (err) => err === boom,
    );
    assert.deepEqual(await Deno.readFile(path), old);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["keep.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("atomicWriteFile into a missing directory throws a FlashlmError naming the temp path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/no/such/dir/out.bin`;
    await assert.rejects(
      atomicWriteFile(path, (file) => writeAll(file, new Uint8Array([1]))),
      (err) =>
        err instanceof FlashlmError && err.kind === "io" && err.message.includes(`${dir}/no`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// readExactly / writeAll

Deno.test("readExactly reads at the given position and reports early end of file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/data.bin`;
    const bytes = randomBytes(1000, new Rng(1));
    const file = await Deno.open(path, { write: true, create: true, read: true });
    await writeAll(file, bytes);
    const dest = new Uint8Array(100);
    await readExactly(file, dest, 900, path);
    assert.deepEqual(dest, bytes.subarray(900));
    await assert.rejects(
      readExactly(file, new Uint8Array(101), 900, path),
      (err) =>
        err instanceof FlashlmError && err.message.startsWith(`${path}: unexpected end of file`),
    );
    file.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// crc32

Deno.test("crc32 matches the standard check values", () => {
  const enc = new TextEncoder();
  // Check value of CRC-32/ISO-HDLC (zlib): the CRC catalogue's "check" field.
  assert.equal(crc32(enc.encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  // zlib.crc32(b"The quick brown fox jumps over the lazy dog")
  assert.equal(crc32(enc.encode("The quick brown fox jumps over the lazy dog")), 0x414fa339);
  assert.equal(crc32Naive(enc.encode("123456789")), 0xcbf43926);
});

Deno.test("crc32 equals crc32Naive on random lengths and alignments", () => {
  const bytes = randomBytes(300, new Rng(7));
  for (let start = 0; start < 9; start++) {
    for (let len = 0; len < 40; len++) {
      const part = bytes.subarray(start, start + len * 7);
      assert.equal(crc32(part), crc32Naive(part));
    }
  }
});

Deno.test("crc32 is incremental at every split point", () => {
  const bytes = randomBytes(77, new Rng(3));
  const whole = crc32(bytes);
  for (let split = 0; split <= bytes.length; split++) {
    const first = crc32(bytes.subarray(0, split));
    assert.equal(crc32(bytes.subarray(split), first), whole);
    assert.equal(crc32Naive(bytes.subarray(split), crc32Naive(bytes.subarray(0, split))), whole);
  }
});
