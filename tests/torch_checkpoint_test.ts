/**
 * PyTorch checkpoints (`pytorch_model.bin`): the restricted unpickler, the zip reader and
 * `convert` over them, on the real torch.save file of the shared tiny OPT and on files written
 * by tests/torch_writer.ts.
 */

import { strict as assert } from "node:assert";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { FlashModelFile } from "../core/flash_file.ts";
import { Generation } from "../core/generate.ts";
import { openCheckpoint } from "../io/checkpoint.ts";
import { FlashlmError } from "../io/errors.ts";
import { unpickle } from "../io/pickle.ts";
import { Checkpoint } from "../io/safetensors_read.ts";
import { TorchCheckpoint } from "../io/torch_checkpoint.ts";
import { readZipDirectory } from "../io/zip.ts";
import { haveSharedFixture, REAL_MODEL_DIR, tinyHfModel } from "./helpers.ts";
import {
  safetensorsToTorch,
  statePickle,
  writeTorchCheckpoint,
  writeTorchFile,
  writeZip,
} from "./torch_writer.ts";

/** The shared tiny OPT saved by torch.save (FP16, lm_head sharing the embedding's storage). */
const REAL_BIN_DIR = new URL("../../shared/models/tiny-opt-wikitext2-bin", import.meta.url)
  .pathname;

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-torch-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function greedy(flm: string, ids: number[], n: number): Promise<number[]> {
  const model = await loadModel(flm, { mode: "naive" });
  try {
    const out: number[] = [];
    for await (const t of new Generation(model, ids, { maxTokens: n, stopAtEos: false })) {
      if (t.id >= 0) out.push(t.id);
    }
    return out;
  } finally {
    model.close();
  }
}

function rejectsWith(pattern: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof FlashlmError, String(err));
    assert.match(err.message, pattern);
    assert.ok(!/[\r\n]/.test(err.message), "one line");
    return true;
  };
}

// ---------------------------------------------------------------------------
// The real torch.save file

Deno.test({
  name:
    "the shared tiny OPT saved by torch.save converts and generates exactly reference.json's greedy tokens",
  ignore: !haveSharedFixture(
    `${REAL_BIN_DIR}/pytorch_model.bin`,
    `${REAL_MODEL_DIR}/reference.json`,
  ),
  fn: async () => {
    await inTempDir(async (dir) => {
      const ckpt = await openCheckpoint(REAL_BIN_DIR);
      assert.ok(ckpt instanceof TorchCheckpoint);
      assert.deepEqual(ckpt.info("lm_head.weight").shape, [50272, 256]);
      assert.equal(
        ckpt.info("lm_head.weight").begin,
        ckpt.info("model.decoder.embed_tokens.weight").begin,
      );
      await convertHfToFlash(REAL_BIN_DIR, `${dir}/tiny.flm`, { dtype: "f16" });
      const reference = JSON.parse(await Deno.readTextFile(`${REAL_MODEL_DIR}/reference.json`));
      for (const p of reference.prompts) {
        assert.deepEqual(await greedy(`${dir}/tiny.flm`, p.ids, 16), p.greedy_16, p.text);
      }
    });
  },
});

// ---------------------------------------------------------------------------
// Files from the test writer

Deno.test("a sharded pytorch_model.bin with its index converts to the same model as the safetensors", async () => {
  const src = await tinyHfModel();
  try {
    await convertHfToFlash(src, `${src}/reference.flm`, { dtype: "f32" });
    const files = await safetensorsToTorch(src, { dtype: "F32", shards: 2 });
    assert.deepEqual(files, [
      "pytorch_model-00001-of-00002.bin",
      "pytorch_model-00002-of-00002.bin",
    ]);
    const ckpt = await openCheckpoint(src);
    assert.ok(ckpt instanceof TorchCheckpoint);
    assert.ok(ckpt.fileOf(ckpt.names().at(-1)!).endsWith(files[1]));
    await convertHfToFlash(src, `${src}/torch.flm`, { dtype: "f32" });
    const reference = await Deno.readFile(`${src}/reference.flm`);
    const converted = await Deno.readFile(`${src}/torch.flm`);
    // The same weights in the same order: only the recorded source folder could differ.
    assert.equal(converted.length, reference.length);
    assert.deepEqual(
      await greedy(`${src}/torch.flm`, [2, 10, 11], 8),
      await greedy(`${src}/reference.flm`, [2, 10, 11], 8),
    );
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test("FP32, FP16 and BF16 storages read back as the values written", async () => {
  await inTempDir(async (dir) => {
    const data = new Float32Array([1.5, -2.25, 0, 1024, -0.125, 3]);
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      await writeTorchCheckpoint(`${dir}/${dtype}.bin`, [{
        name: "w",
        dtype,
        shape: [2, 3],
        data,
      }]);
      const ckpt = await TorchCheckpoint.open(`${dir}/${dtype}.bin`);
      assert.equal(ckpt.info("w").dtype, dtype);
      assert.deepEqual(ckpt.info("w").shape, [2, 3]);
      assert.deepEqual(await ckpt.readF32("w"), data, dtype);
      assert.equal((await ckpt.readRaw("w")).length, 6 * (dtype === "F32" ? 4 : 2));
    }
  });
});

Deno.test("storage types named by dtype (torch.float16, as newer torch may) read as the storage classes do", async () => {
  await inTempDir(async (dir) => {
    const data = new Float32Array([0.5, -1, 2]);
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const path = `${dir}/${dtype}.bin`;
      await writeTorchCheckpoint(path, [{ name: "w", dtype, shape: [3], data }], {
        dtypeGlobals: true,
      });
      const ckpt = await TorchCheckpoint.open(path);
      assert.equal(ckpt.info("w").dtype, dtype);
      assert.deepEqual(await ckpt.readF32("w"), data);
    }
  });
});

Deno.test("tensors that are offset views into one shared storage read their own elements", async () => {
  await inTempDir(async (dir) => {
    const storage = new Float32Array(20).map((_, i) => i);
    await writeTorchFile(`${dir}/m.bin`, [{ key: "0", dtype: "F16", data: storage }], [
      { name: "a", storage: "0", offset: 0, shape: [2, 3], stride: [3, 1] },
      { name: "b", storage: "0", offset: 6, shape: [4], stride: [1] },
      { name: "c", storage: "0", offset: 10, shape: [2, 5], stride: [5, 1], parameter: true },
      { name: "tied", storage: "0", offset: 0, shape: [2, 3], stride: [3, 1] },
    ]);
    const ckpt = await TorchCheckpoint.open(`${dir}/m.bin`);
    assert.deepEqual(ckpt.names(), ["a", "b", "c", "tied"]);
    assert.deepEqual([...await ckpt.readF32("b")], [6, 7, 8, 9]);
    assert.deepEqual([...await ckpt.readF32("c")], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    assert.deepEqual(await ckpt.readF32("tied"), await ckpt.readF32("a"));
    assert.equal(ckpt.info("b").begin, ckpt.info("a").begin + 12);
  });
});

Deno.test("a transposed view is read back in row-major order; other strides are a clear error", async () => {
  await inTempDir(async (dir) => {
    const storage = new Float32Array([1, 2, 3, 4, 5, 6]); // a (3, 2) matrix, row-major
    await writeTorchFile(`${dir}/t.bin`, [{ key: "0", dtype: "F32", data: storage }], [
      { name: "t", storage: "0", offset: 0, shape: [2, 3], stride: [1, 2] }, // its transpose
    ]);
    const ckpt = await TorchCheckpoint.open(`${dir}/t.bin`);
    assert.deepEqual([...await ckpt.readF32("t")], [1, 3, 5, 2, 4, 6]);

    await writeTorchFile(`${dir}/gap.bin`, [{ key: "0", dtype: "F32", data: storage }], [
      { name: "g", storage: "0", offset: 0, shape: [2, 2], stride: [3, 1] },
    ]);
    await assert.rejects(
      TorchCheckpoint.open(`${dir}/gap.bin`),
      rejectsWith(
        /gap\.bin: tensor "g": strides \[3,1\] for shape \[2,2\] are neither row-major nor a transposition/,
      ),
    );
    await writeTorchFile(`${dir}/past.bin`, [{ key: "0", dtype: "F32", data: storage }], [
      { name: "p", storage: "0", offset: 4, shape: [3], stride: [1] },
    ]);
    await assert.rejects(
      TorchCheckpoint.open(`${dir}/past.bin`),
      rejectsWith(/run past its storage of 6 elements/),
    );
  });
});

Deno.test('a {"state_dict": ...} wrapper and an OrderedDict with _metadata are unwrapped', async () => {
  await inTempDir(async (dir) => {
    const tensors = [{
      name: "x",
      dtype: "F32" as const,
      shape: [2],
      data: new Float32Array([7, 8]),
    }];
    await writeTorchCheckpoint(`${dir}/w.bin`, tensors, { wrapStateDict: true, orderedDict: true });
    const ckpt = await TorchCheckpoint.open(`${dir}/w.bin`);
    assert.deepEqual(ckpt.names(), ["x"]);
    assert.deepEqual([...await ckpt.readF32("x")], [7, 8]);
  });
});

Deno.test("safetensors are preferred when a folder holds both, and pytorch_model.bin is used otherwise", async () => {
  const src = await tinyHfModel();
  try {
    await Deno.copyFile(`${src}/model.safetensors`, `${src}/keep.safetensors`);
    await safetensorsToTorch(src, { dtype: "F16" });
    assert.ok((await openCheckpoint(src)) instanceof TorchCheckpoint);
    await Deno.rename(`${src}/keep.safetensors`, `${src}/model.safetensors`);
    assert.ok((await openCheckpoint(src)) instanceof Checkpoint);
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Never running code from a checkpoint

Deno.test("a crafted GLOBAL os system + REDUCE is refused, naming the global and its offset, and nothing runs", async () => {
  await inTempDir(async (dir) => {
    const marker = `${dir}/ran`;
    const enc = new TextEncoder();
    const command = enc.encode(`touch ${marker}`);
    // pickle.dumps of an object whose __reduce__ is (os.system, ("touch <marker>",))
    const evil = new Uint8Array([
      0x80,
      2,
      0x63,
      ...enc.encode("os\nsystem\n"),
      0x71,
      0,
      0x58,
      ...new Uint8Array(new Uint32Array([command.length]).buffer),
      ...command,
      0x85,
      0x52,
      0x2e,
    ]);
    await writeTorchFile(`${dir}/pytorch_model.bin`, [], [], { pickle: evil });
    await assert.rejects(
      TorchCheckpoint.open(dir),
      rejectsWith(/pytorch_model\.bin: data\.pkl: refused global os\.system at byte 2$/),
    );
    for (
      const [module, name] of [["builtins", "eval"], ["posix", "system"], ["subprocess", "Popen"], [
        "torch",
        "load",
      ]]
    ) {
      const bytes = new Uint8Array([0x80, 2, 0x63, ...enc.encode(`${module}\n${name}\n`), 0x2e]);
      await writeTorchFile(`${dir}/pytorch_model.bin`, [], [], { pickle: bytes });
      await assert.rejects(
        TorchCheckpoint.open(dir),
        rejectsWith(new RegExp(`refused global ${module}\\.${name} at byte 2`)),
      );
    }
    // INST and STACK_GLOBAL (other ways to import) are refused as opcodes.
    await writeTorchFile(`${dir}/pytorch_model.bin`, [], [], {
      pickle: new Uint8Array([0x80, 2, 0x28, 0x69, ...enc.encode("os\nsystem\n"), 0x2e]),
    });
    await assert.rejects(
      TorchCheckpoint.open(dir),
      rejectsWith(/refused opcode INST \(0x69\) at byte 3/),
    );
    assert.throws(
      () =>
        unpickle(new Uint8Array([0x80, 4, 0x93]), {
          globals: new Map(),
          persistentLoad: () => null,
          file: "f",
        }),
      /f: pickle: refused opcode STACK_GLOBAL \(0x93\) at byte 2/,
    );
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound, "nothing ran");
  });
});

Deno.test("an allowed storage type may be named but not called", () => {
  const enc = new TextEncoder();
  const bytes = new Uint8Array([
    0x80,
    2,
    0x63,
    ...enc.encode("torch\nHalfStorage\n"),
    0x29,
    0x52,
    0x2e,
  ]);
  const globals = new Map([["torch.HalfStorage", null]]);
  assert.throws(
    () => unpickle(bytes, { globals, persistentLoad: () => null, file: "m.bin" }),
    /m\.bin: pickle: calling torch\.HalfStorage, which may only be referred to at byte 22/,
  );
});

// ---------------------------------------------------------------------------
// The zip container

Deno.test("ZIP64 records are read, and compressed members and pre-zip files are clear errors", async () => {
  await inTempDir(async (dir) => {
    const tensors = [{
      name: "x",
      dtype: "F16" as const,
      shape: [3],
      data: new Float32Array([1, 2, 3]),
    }];
    await writeTorchCheckpoint(`${dir}/z64.bin`, tensors, { zip64: true });
    assert.deepEqual([...await (await TorchCheckpoint.open(`${dir}/z64.bin`)).readF32("x")], [
      1,
      2,
      3,
    ]);

    await writeZip(`${dir}/plain.zip`, [{ name: "a/data.pkl", data: statePickle([], []) }]);
    const bytes = await Deno.readFile(`${dir}/plain.zip`);
    const zip = await readZipDirectory(`${dir}/plain.zip`);
    const at = bytes.length - 22 - (46 + "a/data.pkl".length);
    new DataView(bytes.buffer).setUint16(at + 10, 8, true); // method 8: deflate
    await Deno.writeFile(`${dir}/deflate.bin`, bytes);
    assert.equal(zip.members.get("a/data.pkl")!.offset % 64, 0, "data aligned as torch aligns it");
    await assert.rejects(
      TorchCheckpoint.open(`${dir}/deflate.bin`),
      rejectsWith(/deflate\.bin: member "a\/data\.pkl" is compressed \(method 8\)/),
    );
    await Deno.writeFile(`${dir}/text.bin`, new TextEncoder().encode("hello"));
    await assert.rejects(
      TorchCheckpoint.open(`${dir}/text.bin`),
      rejectsWith(/text\.bin: not a PyTorch checkpoint/),
    );
  });
});

Deno.test("an index naming a tensor its shard lacks is a clear error naming the index", async () => {
  const src = await tinyHfModel();
  try {
    await safetensorsToTorch(src, { shards: 2 });
    const index = JSON.parse(await Deno.readTextFile(`${src}/pytorch_model.bin.index.json`));
    index.weight_map["lm_head.weight"] = "pytorch_model-00001-of-00002.bin";
    await Deno.writeTextFile(`${src}/pytorch_model.bin.index.json`, JSON.stringify(index));
    await assert.rejects(
      openCheckpoint(src),
      rejectsWith(
        /pytorch_model\.bin\.index\.json: weight_map puts tensor "lm_head\.weight" in shard/,
      ),
    );
  } finally {
    await Deno.remove(src, { recursive: true });
  }
});

Deno.test({
  name:
    "a .bin checkpoint whose lm_head shares the embedding converts with the head tied, as the safetensors one",
  ignore: !haveSharedFixture(REAL_BIN_DIR),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-tied-" });
    try {
      await convertHfToFlash(REAL_BIN_DIR, `${dir}/bin.flm`);
      const file = await FlashModelFile.open(`${dir}/bin.flm`);
      assert.equal(file.header.resident.tensors.some((t) => t.name === "lm_head.weight"), false);
      const model = await loadModel(`${dir}/bin.flm`, { mode: "dense" });
      assert.equal(model.transformer.weights.lmHead, model.transformer.weights.tokenEmbedding);
      model.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
