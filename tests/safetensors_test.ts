import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { parseSafetensorsHeader, type SafetensorsHeader } from "../io/safetensors.ts";
import { Checkpoint, readSafetensorsHeader, readTensorF32 } from "../io/safetensors_read.ts";
import { writeSafetensors } from "../io/safetensors_write.ts";
import { Rng } from "../core/sampler.ts";
import { haveRealModel, REAL_MODEL_DIR } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Helpers

/** The bytes of a safetensors file: length field, `header` text (UTF-8), `dataSize` zero bytes. */
function fileBytes(header: string | Uint8Array, dataSize: number, length?: bigint): Uint8Array {
  const h = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const bytes = new Uint8Array(8 + h.length + dataSize);
  new DataView(bytes.buffer).setBigUint64(0, length ?? BigInt(h.length), true);
  bytes.set(h, 8);
  return bytes;
}

const BAD = "bad.safetensors";

/** Assert that parsing `bytes` (of declared size `fileSize`) fails naming the file and `what`. */
function assertRejected(bytes: Uint8Array, what: RegExp, fileSize = bytes.length): void {
  assert.throws(
    () => parseSafetensorsHeader(bytes, fileSize, BAD),
    (err) => {
      assert.ok(err instanceof FlashlmError, `not a FlashlmError: ${err}`);
      assert.equal(err.kind, "format");
      assert.ok(err.message.startsWith(`${BAD}: `), err.message);
      assert.match(err.message, what);
      return true;
    },
  );
}

/** One valid tensor entry of `n` F32 values at relative offset `begin`. */
function f32Entry(n: number, begin: number): string {
  return `{"dtype":"F32","shape":[${n}],"data_offsets":[${begin},${begin + 4 * n}]}`;
}

function values(n: number, f: (i: number) => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f(i);
  return out;
}

// ---------------------------------------------------------------------------
// Round trips

Deno.test("writeSafetensors then readTensorF32 round-trips F32, F16 and BF16 exactly", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const rng = new Rng(11);
    const path = `${dir}/rt.safetensors`;
    // F16 and BF16 hold every multiple of 1/4 in [-32, 32) exactly; F32 holds any float32.
    const quarter = (n: number) => values(n, () => Math.floor(rng.next() * 256 - 128) / 4);
    const tensors = [
      {
        name: "f32",
        dtype: "F32" as const,
        shape: [3, 5],
        data: values(15, () => rng.next() - 0.5),
      },
      { name: "f16", dtype: "F16" as const, shape: [7, 3], data: quarter(21) },
      { name: "bf16", dtype: "BF16" as const, shape: [2, 2, 3], data: quarter(12) },
      { name: "empty", dtype: "F16" as const, shape: [0, 4], data: new Float32Array(0) },
      // Larger than one write chunk, so the chunked conversion is exercised.
      { name: "big", dtype: "F16" as const, shape: [70000], data: quarter(70000) },
      { name: "scalar", dtype: "F32" as const, shape: [], data: new Float32Array([1.5]) },
      { name: "__proto__", dtype: "F32" as const, shape: [1], data: new Float32Array([-3]) },
    ];
    await writeSafetensors(path, tensors, { format: "pt", note: "round trip" });

    const header = await readSafetensorsHeader(path);
    assert.equal(header.dataOffset % 8, 0);
    assert.equal(header.fileSize, (await Deno.stat(path)).size);
    assert.deepEqual(header.metadata, { format: "pt", note: "round trip" });
    assert.deepEqual([...header.tensors.keys()], tensors.map((t) => t.name));
    for (const t of tensors) {
      const info = header.tensors.get(t.name)!;
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      // Laid out wider dtypes first, every tensor is aligned to its element size.
      assert.equal(info.begin % (t.dtype === "F32" ? 4 : 2), 0);
      assert.deepEqual(await readTensorF32(header, t.name), t.data);
    }
    // Nothing but the file itself is left in the directory.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["rt.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSafetensors writes a subarray view's own values, not its whole buffer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/view.safetensors`;
    const backing = values(10, (i) => i);
    await writeSafetensors(path, [
      { name: "v", dtype: "F32", shape: [4], data: backing.subarray(3, 7) },
    ]);
    assert.deepEqual(
      await readTensorF32(await readSafetensorsHeader(path), "v"),
      backing.slice(3, 7),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeSafetensors rejects a shape that does not match the data and duplicate names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/w.safetensors`;
    await assert.rejects(
      writeSafetensors(path, [{ name: "a", dtype: "F32", shape: [3], data: new Float32Array(4) }]),
      (err) => err instanceof FlashlmError && err.message.startsWith(path),
    );
    const a = { name: "a", dtype: "F32" as const, shape: [1], data: new Float32Array(1) };
    await assert.rejects(
      writeSafetensors(path, [a, a]),
      (err) => err instanceof FlashlmError && err.message.includes('"a"'),
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Checkpoints

Deno.test("Checkpoint opens a sharded checkpoint through model.safetensors.index.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = values(6, (i) => i);
    const b = values(4, (i) => -i);
    const c = values(2, (i) => i / 2);
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, [
      { name: "a", dtype: "F32", shape: [2, 3], data: a },
      { name: "b", dtype: "F16", shape: [4], data: b },
    ]);
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, [
      { name: "c", dtype: "BF16", shape: [2], data: c },
    ]);
    const weightMap = {
      a: "model-00001-of-00002.safetensors",
      b: "model-00001-of-00002.safetensors",
      c: "model-00002-of-00002.safetensors",
    };
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: 40 }, weight_map: weightMap }),
    );

    const ckpt = await Checkpoint.open(dir);
    assert.equal(ckpt.path, dir);
    assert.deepEqual(ckpt.names().sort(), ["a", "b", "c"]);
    assert.ok(ckpt.has("c") && !ckpt.has("d"));
    assert.deepEqual(ckpt.info("a").shape, [2, 3]);
    assert.equal(ckpt.info("c").dtype, "BF16");
    assert.deepEqual(await ckpt.readF32("a"), a);
    assert.deepEqual(await ckpt.readF32("b"), b);
    assert.deepEqual(await ckpt.readF32("c"), c);
    assert.throws(
      () => ckpt.info("d"),
      (err) =>
        err instanceof FlashlmError && err.message.startsWith(`${dir}: `) &&
        err.message.includes('"d"'),
    );
    await assert.rejects(ckpt.readF32("d"), FlashlmError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Checkpoint rejects an index naming a missing shard or a tensor its shard lacks", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const index = `${dir}/model.safetensors.index.json`;
    await writeSafetensors(`${dir}/s1.safetensors`, [
      { name: "a", dtype: "F32", shape: [1], data: new Float32Array(1) },
    ]);
    const expectIndexError = async (weightMap: unknown, what: RegExp) => {
      await Deno.writeTextFile(index, JSON.stringify({ weight_map: weightMap }));
      await assert.rejects(Checkpoint.open(dir), (err) => {
        assert.ok(err instanceof FlashlmError);
        assert.ok(err.message.startsWith(`${index}: `), err.message);
        assert.match(err.message, what);
        return true;
      });
    };
    await expectIndexError({ a: "s1.safetensors", b: "s2.safetensors" }, /s2\.safetensors/);
    await expectIndexError({ a: "s1.safetensors", z: "s1.safetensors" }, /"z"/);
    await expectIndexError({ a: "../s1.safetensors" }, /relative shard/);
    await expectIndexError({ a: 7 }, /relative shard/);
    await expectIndexError([1], /weight_map/);
    await Deno.writeTextFile(index, "{oops");
    await assert.rejects(
      Checkpoint.open(dir),
      (err) => err instanceof FlashlmError && err.message.startsWith(`${index}: `),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Checkpoint opens a direct .safetensors path and rejects a directory without weights", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      Checkpoint.open(dir),
      (err) => err instanceof FlashlmError && err.message.startsWith(`${dir}: `),
    );
    await assert.rejects(
      Checkpoint.open(`${dir}/absent.safetensors`),
      (err) => err instanceof FlashlmError && err.message.includes("absent.safetensors"),
    );
    const path = `${dir}/x.safetensors`;
    await writeSafetensors(path, [
      { name: "x", dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
    ]);
    const ckpt = await Checkpoint.open(path);
    assert.deepEqual(ckpt.names(), ["x"]);
    assert.deepEqual(await ckpt.readF32("x"), new Float32Array([1, 2]));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the shared tiny OPT checkpoint's header parses and its tensors match its config",
  ignore: !haveRealModel(),
  fn: async () => {
    const config = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/config.json`));
    const ckpt = await Checkpoint.open(REAL_MODEL_DIR);
    const embed = ckpt.info("model.decoder.embed_tokens.weight");
    assert.deepEqual(embed.shape, [config.vocab_size, config.hidden_size]);
    const positions = ckpt.info("model.decoder.embed_positions.weight");
    assert.deepEqual(positions.shape, [config.max_position_embeddings + 2, config.hidden_size]);
    const gamma = await ckpt.readF32("model.decoder.final_layer_norm.weight");
    assert.equal(gamma.length, config.hidden_size);
    assert.ok(gamma.every(Number.isFinite));
  },
});

// ---------------------------------------------------------------------------
// Header validation: every bad header is one FlashlmError naming the file

Deno.test("a valid header padded with spaces and with gaps between tensors parses", () => {
  const text = `{"__metadata__":{"format":"pt"},"a":${f32Entry(2, 0)},"b":${f32Entry(1, 16)}}   `;
  const header = parseSafetensorsHeader(fileBytes(text, 20), 8 + text.length + 20, "ok");
  const a = header.tensors.get("a")!;
  const b = header.tensors.get("b")!;
  assert.equal(header.dataOffset, 8 + text.length);
  assert.equal(a.begin, header.dataOffset);
  assert.equal(b.begin - a.begin, 16);
  assert.equal(header.metadata.format, "pt");
});

Deno.test("the length field is checked against the file before anything is allocated", () => {
  assertRejected(new Uint8Array(5), /shorter than the 8-byte/);
  assertRejected(fileBytes("{}", 0, 1000n), /larger than the/);
  assertRejected(fileBytes("", 0, 200_000_000n), /limit/, 1e9);
  assertRejected(fileBytes("", 0, 1n << 63n), /safe integer/);
  assertRejected(fileBytes("", 0, 0xffffffffffffffffn), /safe integer/);
  // Prefix shorter than the header it announces.
  assertRejected(fileBytes("", 0, 100n), /header needs 108/, 1000);
});

Deno.test("a header that is not a UTF-8 JSON object is rejected", () => {
  assertRejected(fileBytes(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 0), /UTF-8 JSON/);
  assertRejected(fileBytes("{not json}", 0), /UTF-8 JSON/);
  assertRejected(fileBytes("", 0), /UTF-8 JSON/);
  assertRejected(fileBytes("[1, 2]", 0), /not a JSON object/);
  assertRejected(fileBytes("null", 0), /not a JSON object/);
  assertRejected(fileBytes('"text"', 0), /not a JSON object/);
});

Deno.test("bad metadata is rejected", () => {
  assertRejected(fileBytes('{"__metadata__":[1]}', 0), /__metadata__/);
  assertRejected(fileBytes('{"__metadata__":{"k":1}}', 0), /"k" is not a string/);
});

Deno.test("a bad tensor entry is rejected with the tensor's name", () => {
  const cases: [string, RegExp][] = [
    ['{"t":3}', /"t" is not an object/],
    ['{"t":{"shape":[1],"data_offsets":[0,4]}}', /no "dtype"/],
    ['{"t":{"dtype":"F32","data_offsets":[0,4]}}', /no "shape"/],
    ['{"t":{"dtype":"F32","shape":[1]}}', /no "data_offsets"/],
    ['{"t":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}', /unknown dtype "F12"/],
    ['{"t":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}', /unknown dtype 7/],
    ['{"t":{"dtype":"F32","shape":1,"data_offsets":[0,4]}}', /shape/],
    ['{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', /shape/],
    ['{"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', /shape/],
    ['{"t":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}', /shape/],
    ['{"t":{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}}', /shape/],
    ['{"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}}', /data_offsets/],
    ['{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', /data_offsets/],
    ['{"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}', /data_offsets/],
    ['{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}', /data_offsets/],
    ['{"t":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}}', /data_offsets/],
    ['{"t":{"dtype":"F32","shape":[67108864,67108864,67108864],"data_offsets":[0,4]}}', /overflow/],
    [
      '{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}',
      /4 bytes but F32 shape \[2\] needs 8/,
    ],
    ['{"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', /begin 8 is after end 0/],
    ['{"t":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}', /beyond the 16-byte data buffer/],
  ];
  for (const [header, what] of cases) {
    assertRejected(fileBytes(header, 16), what);
    assertRejected(fileBytes(header, 16), /tensor "t"/);
  }
});

Deno.test("overlapping tensors are rejected whatever their header order", () => {
  const overlap = `{"b":${f32Entry(2, 4)},"a":${f32Entry(2, 0)}}`;
  assertRejected(fileBytes(overlap, 16), /"a" and "b" overlap/);
  const inside = `{"big":${f32Entry(4, 0)},"small":${f32Entry(1, 4)}}`;
  assertRejected(fileBytes(inside, 16), /overlap/);
  // Touching is fine, and an empty tensor overlaps nothing.
  const touching = `{"a":${f32Entry(2, 0)},"b":${f32Entry(2, 8)},"e":${f32Entry(0, 4)}}`;
  assert.equal(
    parseSafetensorsHeader(fileBytes(touching, 16), 8 + touching.length + 16, "ok")
      .tensors.size,
    3,
  );
});

Deno.test("reading a bad or truncated file gives a FlashlmError naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const isNamed = (path: string) => (err: unknown) =>
      err instanceof FlashlmError && err.message.startsWith(`${path}: `);
    const tiny = `${dir}/tiny.safetensors`;
    await Deno.writeFile(tiny, new Uint8Array(3));
    await assert.rejects(readSafetensorsHeader(tiny), isNamed(tiny));

    const missing = `${dir}/missing.safetensors`;
    await assert.rejects(
      readSafetensorsHeader(missing),
      (err) => isNamed(missing)(err) && (err as FlashlmError).kind === "io",
    );

    // A file cut short: its tensor now ends past the end of the data.
    const cut = `${dir}/cut.safetensors`;
    await writeSafetensors(cut, [
      { name: "w", dtype: "F32", shape: [8], data: new Float32Array(8) },
    ]);
    const bytes = await Deno.readFile(cut);
    await Deno.writeFile(cut, bytes.subarray(0, bytes.length - 4));
    await assert.rejects(readSafetensorsHeader(cut), isNamed(cut));

    // An integer tensor cannot be read as float32; an absent name is an error.
    const ints = `${dir}/ints.safetensors`;
    const text = '{"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}';
    await Deno.writeFile(ints, fileBytes(text, 8));
    const header: SafetensorsHeader = await readSafetensorsHeader(ints);
    await assert.rejects(readTensorF32(header, "i"), isNamed(ints));
    await assert.rejects(readTensorF32(header, "nope"), isNamed(ints));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Fuzzing

Deno.test("2,000 mutated headers each either parse consistently or throw a FlashlmError", () => {
  const rng = new Rng(20240601);
  const randInt = (n: number) => Math.floor(rng.next() * n);
  const text = `{"__metadata__":{"format":"pt"},"x.weight":${f32Entry(3, 0)},` +
    `"x.bias":{"dtype":"F16","shape":[2,2],"data_offsets":[12,20]},"e":${f32Entry(0, 20)}}  `;
  const valid = fileBytes(text, 24);
  const jsonChars = '{}[]",:0123456789-.eE ';
  const path = "fuzz.safetensors";
  let parsed = 0;
  let rejected = 0;

  for (let iter = 0; iter < 2000; iter++) {
    let bytes = valid.slice();
    let fileSize = bytes.length;
    switch (iter % 5) {
      case 0: // flip a few bits anywhere in the length field or header
        for (let k = 1 + randInt(4); k > 0; k--) {
          const i = randInt(8 + text.length);
          bytes[i] ^= 1 << randInt(8);
        }
        break;
      case 1: // truncate the file
        bytes = bytes.subarray(0, randInt(bytes.length + 1));
        fileSize = bytes.length;
        break;
      case 2: { // a random or huge length field
        const choices = [
          BigInt(randInt(2 ** 31)) * BigInt(randInt(2 ** 31) + 1),
          BigInt(text.length + randInt(9) - 4),
          0xffffffffffffffffn,
          1n << BigInt(randInt(64)),
        ];
        new DataView(bytes.buffer).setBigUint64(0, choices[randInt(choices.length)], true);
        break;
      }
      case 3: // replace header bytes with JSON-significant characters
        for (let k = 1 + randInt(3); k > 0; k--) {
          bytes[8 + randInt(text.length)] = jsonChars.charCodeAt(randInt(jsonChars.length));
        }
        break;
      case 4: // claim a different file size than the bytes at hand
        fileSize = Math.max(0, fileSize + randInt(64) - 40);
        break;
    }
    try {
      const header = parseSafetensorsHeader(bytes, fileSize, path);
      parsed++;
      // Whatever parsed must be internally consistent.
      assert.ok(header.dataOffset >= 8 && header.dataOffset <= fileSize);
      for (const t of header.tensors.values()) {
        assert.ok(header.dataOffset <= t.begin && t.begin <= t.end && t.end <= fileSize);
      }
    } catch (err) {
      rejected++;
      assert.ok(err instanceof FlashlmError, `iteration ${iter}: ${err}`);
      assert.ok(err.message.startsWith(`${path}: `), `iteration ${iter}: ${err.message}`);
    }
  }
  assert.equal(parsed + rejected, 2000);
  assert.ok(parsed > 0 && rejected > 0, `parsed ${parsed}, rejected ${rejected}`);
});
