/**
 * Bad input: fuzzed parsers, NaN/Inf weights and bad command lines.
 *
 * Each format's fuzz test runs `$FLASHLM_FUZZ_ITERS` cases (default {@linkcode DEFAULT_ITERS}
 * for CI; the full run is `FLASHLM_FUZZ_ITERS=10000 deno test -A tests/fuzz_test.ts`) and
 * prints its counts. Every case must end in success or a one-line FlashlmError naming the
 * file, within the hang bound, allocating no more than its input size plus a fixed slack
 * (the runner is `tests/fuzz_helpers.ts`, the mutators `tests/fuzz_mutators.ts`, the valid
 * input of each format `tests/fuzz_formats.ts`).
 */

import { strict as assert } from "node:assert";
import { main } from "../cli.ts";
import { parseArgs } from "../cli/args.ts";
import { parseModelConfig } from "../core/config.ts";
import { toHfConfigJson } from "../core/config_json.ts";
import { convertHfToFlash } from "../core/convert.ts";
import { loadModel } from "../core/engine.ts";
import { FlashlmError } from "../io/errors.ts";
import { FlashModelFile, verifyFfn } from "../core/flash_file.ts";
import { parseFlashHeader, PREAMBLE_BYTES } from "../core/flash_format.ts";
import { parseBudget } from "../core/memory_sizes.ts";
import { deserializePredictor, LowRankPredictor, serializePredictor } from "../core/predictor.ts";
import { Rng } from "../core/sampler.ts";
import { buildByteLevelVocab } from "../core/gpt2_bpe.ts";
import { OptTokenizer } from "../core/tokenizer.ts";
import { parseSafetensorsHeader } from "../io/safetensors.ts";
import { Checkpoint } from "../io/safetensors_read.ts";
import {
  chance,
  formatFuzzReport,
  type FuzzCase,
  fuzzIterations,
  type FuzzReport,
  pickOne,
  randomInt,
  runFuzz,
} from "./fuzz_helpers.ts";
import { mutateBytes, mutateJson, mutateText } from "./fuzz_mutators.ts";
import {
  checkedRanges,
  flashBase,
  pokeTensor,
  safetensorsBase,
  withFlashHeader,
  withSafetensorsHeader,
} from "./fuzz_formats.ts";
import { exists, tinyHfModel } from "./helpers.ts";
import { sharedFlashModel, sharedHfModel } from "./fixtures.ts";

/** Cases per format when `$FLASHLM_FUZZ_ITERS` is not set (CI). */
const DEFAULT_ITERS = 300;
const ITERS = fuzzIterations(DEFAULT_ITERS);

/** Every this many cases, a mutated file also goes through the file-level API. */
const FILE_EVERY = 8;

function check(report: FuzzReport): void {
  console.log(formatFuzzReport(report));
  assert.deepEqual(report.failures, [], `${report.format}: ${report.failures.length} failed cases`);
  assert.equal(report.cases, report.accepted + report.rejected);
  assert.ok(report.rejected > 0, "the mutations reach the parser's checks");
}

const enc = new TextEncoder();
const dec = new TextDecoder(); // non-fatal: mutated bytes become U+FFFD, as a text file read would

// ---------------------------------------------------------------------------
// safetensors

Deno.test("fuzzed safetensors files end in success or a one-line FlashlmError naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-fuzz-" });
  const base = await safetensorsBase(dir);
  const n = Number(new DataView(base.buffer).getBigUint64(0, true));
  const headerJson = JSON.parse(dec.decode(base.subarray(8, 8 + n)));
  const path = `${dir}/model.safetensors`;
  const report = await runFuzz("safetensors", ITERS, 101, async (rng, i) => {
    let bytes: Uint8Array, how: string;
    if (chance(rng, 0.5)) {
      const m = mutateJson(headerJson, rng);
      bytes = withSafetensorsHeader(base, m.value, chance(rng, 0.5));
      how = `header JSON: ${m.how}`;
    } else {
      const m = mutateBytes(base, rng, {
        lengthFields: [{ offset: 0, size: 8 }],
        focus: [0, 8 + n],
      });
      bytes = m.value;
      how = m.how;
    }
    const viaFile = i % FILE_EVERY === 0;
    if (viaFile) await Deno.writeFile(path, bytes);
    return {
      how,
      inputBytes: bytes.length,
      file: path,
      run: async () => {
        parseSafetensorsHeader(bytes, bytes.length, path);
        if (!viaFile) return;
        const checkpoint = await Checkpoint.open(dir);
        for (const name of checkpoint.names()) {
          const dtype = checkpoint.info(name).dtype;
          if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") continue;
          const values = await checkpoint.readF32(name);
          const shape = checkpoint.info(name).shape;
          if (values.length !== shape.reduce((a, b) => a * b, 1)) {
            throw new Error(`${name}: wrong length`);
          }
        }
      },
    };
  });
  check(report);
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// config.json

Deno.test("fuzzed config.json files end in success or a one-line FlashlmError naming the file", async () => {
  const opt = JSON.parse(
    '{"model_type":"opt","vocab_size":264,"hidden_size":16,"ffn_dim":64,"num_hidden_layers":2,' +
      '"num_attention_heads":4,"max_position_embeddings":32}',
  );
  const bases = [
    toHfConfigJson(parseModelConfig(JSON.stringify(opt), "opt.json")),
    JSON.parse(
      '{"model_type":"gpt2","vocab_size":50257,"n_embd":768,"n_layer":12,"n_head":12,' +
        '"n_positions":1024,"layer_norm_epsilon":1e-5}',
    ),
  ];
  const file = "fuzz/config.json";
  const report = await runFuzz("config.json", ITERS, 202, (rng): FuzzCase => {
    const base = pickOne(rng, bases);
    let text: string, how: string;
    if (chance(rng, 0.75)) {
      ({ value: text, how } = mutateJson(base, rng));
    } else {
      const m = mutateBytes(enc.encode(JSON.stringify(base, null, 2)), rng);
      text = dec.decode(m.value);
      how = m.how;
    }
    return {
      how,
      inputBytes: enc.encode(text).length,
      file,
      run: () => {
        const c = parseModelConfig(text, file);
        const sizes = [
          c.vocabSize,
          c.dModel,
          c.dFfn,
          c.nLayers,
          c.nHeads,
          c.maxPositions,
          c.wordEmbedProjDim,
        ];
        if (!sizes.every((s) => Number.isSafeInteger(s) && s > 0)) {
          throw new Error(`accepted sizes ${sizes}`);
        }
        if (c.dModel % c.nHeads !== 0) throw new Error("accepted dModel not divisible by nHeads");
        const ffnBytes = c.nLayers * c.dFfn * 2 * c.dModel * 4;
        if (!Number.isSafeInteger(ffnBytes)) {
          throw new Error(`accepted a config whose FFN is ${ffnBytes} bytes`);
        }
      },
    };
  });
  check(report);
});

// ---------------------------------------------------------------------------
// tokenizer files

Deno.test("fuzzed vocab.json and merges.txt end in success or a one-line FlashlmError naming the file", async () => {
  const { vocabJson, mergesText } = buildByteLevelVocab(40);
  const vocab = JSON.parse(vocabJson);
  const file = "fuzz/vocab.json";
  OptTokenizer.fromFiles(vocabJson, mergesText, file); // builds the shared GPT-2 tables once
  const report = await runFuzz("tokenizer", ITERS, 303, (rng): FuzzCase => {
    let v = vocabJson, m = mergesText, how: string;
    const r = rng.next();
    if (r < 0.6) {
      ({ value: v, how } = mutateJson(vocab, rng));
    } else if (r < 0.8) {
      const x = mutateBytes(enc.encode(vocabJson), rng);
      v = dec.decode(x.value);
      how = `vocab bytes: ${x.how}`;
    } else {
      const x = mutateBytes(enc.encode(mergesText), rng);
      m = dec.decode(x.value);
      how = `merges bytes: ${x.how}`;
    }
    return {
      how,
      inputBytes: enc.encode(v).length + enc.encode(m).length,
      file,
      run: () => {
        const tok = OptTokenizer.fromFiles(v, m, file);
        const ids = tok.encode("Hello, wörld 🙂\n");
        const stream = tok.streamDecoder();
        let text = "";
        for (const id of ids) text += stream.push(id);
        text += stream.flush();
        if (text !== tok.decode(ids)) throw new Error("stream decode differs from decode");
      },
    };
  });
  check(report);
});

// ---------------------------------------------------------------------------
// flashlm model files

Deno.test("fuzzed flashlm model files end in success or a one-line FlashlmError, and a changed checked byte is always caught", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-fuzz-" });
  const base = await flashBase(dir);
  const basePath = `${dir}/base.flm`;
  const jsonLength = new DataView(base.buffer).getUint32(12, true);
  const headerJson = JSON.parse(
    dec.decode(base.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + jsonLength)),
  );
  const ranges = checkedRanges(await FlashModelFile.open(basePath), jsonLength);
  const covered = (p: number): boolean => ranges.some(([a, b]) => p >= a && p < b);
  const path = `${dir}/fuzz.flm`;
  let caught = 0;
  const report = await runFuzz("flash header", ITERS, 404, async (rng, i) => {
    let bytes: Uint8Array, how: string;
    const r = rng.next();
    if (r < 0.45) {
      const m = mutateJson(headerJson, rng);
      const fixCrc = chance(rng, 0.85);
      bytes = withFlashHeader(base, m.value, fixCrc);
      how = `header JSON${fixCrc ? " (re-signed)" : ""}: ${m.how}`;
    } else {
      const m = mutateBytes(base, rng, {
        lengthFields: [{ offset: 12, size: 4 }, { offset: 8, size: 4 }],
        focus: r < 0.8 ? [0, PREAMBLE_BYTES + jsonLength] : undefined,
      });
      bytes = m.value;
      how = m.how;
    }
    // A same-length change of a byte some checksum covers must be detected.
    let mustDetect = false;
    if (bytes.length === base.length && !how.includes("re-signed")) {
      for (let p = 0; p < bytes.length && !mustDetect; p++) {
        mustDetect = bytes[p] !== base[p] && covered(p);
      }
    }
    const viaFile = mustDetect || i % FILE_EVERY === 0;
    if (viaFile) await Deno.writeFile(path, bytes);
    return {
      how,
      inputBytes: bytes.length,
      file: path,
      run: async () => {
        let error: unknown = null;
        let badLayers: number[] = [];
        try {
          parseFlashHeader(bytes, bytes.length, path);
          if (!viaFile) return;
          const file = await FlashModelFile.open(path);
          badLayers = await verifyFfn(file);
          const model = await loadModel(path, { mode: "sparse" });
          try {
            await model.transformer.forward(model.tokenizer.bosId, 0);
          } finally {
            model.close();
          }
        } catch (e) {
          error = e;
        }
        const detected = error !== null || badLayers.length > 0;
        if (mustDetect && detected) caught++;
        if (mustDetect && !detected) throw new Error("a changed checked byte went unnoticed");
        if (error !== null) throw error;
      },
    };
  });
  check(report);
  console.log(
    `fuzz flash header: ${caught} single-region byte changes covered by a checksum, all caught`,
  );
  assert.ok(caught > 0);
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// predictor blobs

Deno.test("fuzzed predictor descriptions and weights end in success or a one-line FlashlmError naming the file", async () => {
  const dModel = 8, dFfn = 16;
  const rng0 = new Rng(3);
  const layers = [2, 3].map((rank) => ({
    rank,
    dModel,
    dFfn,
    a: Float32Array.from({ length: rank * dModel }, () => rng0.normal()),
    b: Float32Array.from({ length: dFfn * rank }, () => rng0.normal()),
    c: Float32Array.from({ length: dFfn }, () => rng0.normal()),
    threshold: 0.4,
  }));
  const { meta, bytes } = serializePredictor(new LowRankPredictor(layers));
  const file = "fuzz/model.flm";
  const x = Float32Array.from({ length: dModel }, (_, i) => i - 3);
  const out = new Int32Array(dFfn);
  const report = await runFuzz("predictor", ITERS, 505, (rng): FuzzCase => {
    let metaText = JSON.stringify(meta), blob = bytes, how = "";
    const r = rng.next();
    if (r < 0.6) ({ value: metaText, how } = mutateJson(meta, rng));
    if (r >= 0.4) {
      const m = mutateBytes(bytes, rng);
      blob = m.value;
      how += (how ? "; " : "") + `weights: ${m.how}`;
    }
    return {
      how,
      inputBytes: blob.length + metaText.length,
      file,
      run: () => {
        const p = deserializePredictor(JSON.parse(metaText), blob, dModel, dFfn, 2, file);
        for (let l = 0; l < 2; l++) p.predict(l, x, out);
      },
    };
  });
  check(report);
});

// ---------------------------------------------------------------------------
// memory budgets and command lines

Deno.test("fuzzed --memory budgets are a valid budget or a one-line usage error", async () => {
  const seeds = [
    "2GB",
    "512MiB",
    "1.5GiB",
    "123456",
    "50%",
    "ffn:30%",
    "100%",
    "0.5TB",
    "64 KiB",
    "ffn:100%",
  ];
  const report = await runFuzz("memory budget", ITERS, 606, (rng): FuzzCase => {
    let text = pickOne(rng, seeds), how = "";
    const edits = 1 + randomInt(rng, 3);
    for (let k = 0; k < edits; k++) {
      const m = mutateText(text, rng);
      text = m.value;
      how += (how ? "; " : "") + m.how;
    }
    return {
      how: `${JSON.stringify(text.slice(0, 40))}: ${how}`,
      inputBytes: text.length,
      run: () => {
        const b = parseBudget(text);
        if (b.kind === "bytes" && !(Number.isSafeInteger(b.bytes) && b.bytes >= 1)) {
          throw new Error(`accepted a budget of ${b.bytes} bytes`);
        }
        if (b.kind !== "bytes" && !(b.percent > 0 && b.percent <= 10000)) {
          throw new Error(`accepted ${b.percent}%`);
        }
      },
    };
  });
  check(report);
});

Deno.test("fuzzed command lines parse to values within their limits or give a one-line usage error", async () => {
  const spec = {
    "max-tokens": { type: "integer" as const, help: "", min: 0 },
    temperature: { type: "number" as const, help: "", min: 0, max: 100 },
    mode: { type: "string" as const, help: "", choices: ["dense", "naive", "sparse"] },
    greedy: { type: "boolean" as const, help: "" },
    prompt: { type: "string" as const, help: "" },
  };
  const words = [
    "--max-tokens",
    "--temperature",
    "--mode",
    "--greedy",
    "--prompt",
    "--bogus",
    "-x",
    "-",
    "--",
    "--=",
    "---",
    "--max-tokens=",
    "--max-tokens=5",
    "--greedy=maybe",
    "5",
    "-1",
    "1.5",
    "1e400",
    "0x10",
    " ",
    "",
    "abc",
    "a\nb",
    "naive",
    "turbo",
    "model.flm",
  ];
  const report = await runFuzz("command line", ITERS, 707, (rng): FuzzCase => {
    const argv = Array.from({ length: randomInt(rng, 6) }, () => pickOne(rng, words));
    return {
      how: JSON.stringify(argv),
      inputBytes: argv.join(" ").length,
      run: () => {
        const { flags } = parseArgs(argv, spec);
        const t = flags["max-tokens"];
        if (t !== undefined && !(Number.isSafeInteger(t) && (t as number) >= 0)) {
          throw new Error(`max-tokens ${t}`);
        }
        const temp = flags.temperature as number | undefined;
        if (temp !== undefined && !(temp >= 0 && temp <= 100)) {
          throw new Error(`temperature ${temp}`);
        }
      },
    };
  });
  check(report);
});

/** Run the CLI in this process; returns its exit code and what it printed on stderr. */
async function cli(args: string[]): Promise<{ code: number; stderr: string }> {
  const lines: string[] = [];
  const original = console.error;
  const originalLog = console.log;
  console.error = (...parts: unknown[]) => lines.push(parts.join(" "));
  console.log = () => {};
  try {
    const code = await main(args);
    return { code, stderr: lines.join("\n") };
  } finally {
    console.error = original;
    console.log = originalLog;
  }
}

Deno.test("out-of-range --memory, bad sparse options and bad files are one-line errors with exit codes 2 and 1", async () => {
  const hf = await sharedHfModel({ maxPositions: 16 });
  const flm = await sharedFlashModel({ maxPositions: 16 }, "f32");
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bad-cli-" });
  const corrupt = `${dir}/corrupt.flm`;
  const bytes = await Deno.readFile(flm);
  bytes[100] ^= 1;
  await Deno.writeFile(corrupt, bytes);
  const cases: [string[], number, RegExp][] = [
    [["generate", flm, "--memory", "0%"], 2, /percentage must be in \(0, 10000\]/],
    [["generate", flm, "--memory", "20000%"], 2, /percentage must be in \(0, 10000\]/],
    [["generate", flm, "--memory", "ffn:0%"], 2, /percentage must be in \(0, 10000\]/],
    [["generate", flm, "--memory", "-1GB"], 2, /--memory "-1GB": expected bytes/],
    [["generate", flm, "--memory", "lots"], 2, /expected bytes/],
    [["generate", flm, "--memory", "0.1B"], 2, /positive size/],
    [
      ["generate", flm, "--memory", "1KB", "--predictor", "oracle"],
      2,
      /below what must stay in DRAM/,
    ],
    [["generate", flm, "--memory", "50%", "--mode", "dense"], 2, /apply to --mode sparse/],
    [["generate", flm, "--memory", "a\nb"], 2, /--memory "a\\nb"/],
    [["generate", flm, "--window", "0"], 2, /--window must be at least 1/],
    [["generate", flm, "--depth", "0"], 2, /--depth must be at least 1/],
    [["generate", flm, "--depth", "5000"], 2, /--depth must be at most 1024/],
    [["generate", flm, "--context", "0"], 2, /--context must be at least 1/],
    [["generate", flm, "--max-tokens", "-1"], 2, /--max-tokens must be at least 0/],
    [["generate", flm, "--max-tokens", "1\n2"], 2, /needs a number, got "1\\n2"/],
    [["generate", flm, "--temperature", "-0.5"], 2, /--temperature must be at least 0/],
    [["generate", flm, "--predictor", "psychic"], 2, /--predictor must be one of file, oracle/],
    [["generate", flm, "--mode", "sparse"], 2, /train-predictor/],
    [
      ["generate", flm, "--context", "4", "--prompt", "a prompt longer than four tokens"],
      2,
      /context holds 4/,
    ],
    [["generate", flm, flm], 2, /generate takes one model/],
    [["convert", hf, `${dir}/x.flm`, "--dtype", "f8"], 2, /--dtype must be one of f16, f32/],
    [["train-predictor", flm], 2, /needs --text/],
    [[`${dir}/missing.flm`], 2, /unknown command or missing model/],
    [["generate", `${dir}/missing.flm`], 1, /missing\.flm: file not found/],
    [["inspect", `${dir}/missing.flm`], 1, /missing\.flm: file not found/],
    [["generate", corrupt], 1, /corrupt\.flm: header checksum mismatch/],
    [["verify", corrupt], 1, /corrupt\.flm: header checksum mismatch/],
    [["convert", `${dir}/nowhere`, `${dir}/x.flm`], 1, /nowhere\/config\.json: missing/],
  ];
  const codes = new Map<number, number>();
  for (const [args, code, pattern] of cases) {
    const r = await cli(args);
    const shown = JSON.stringify(args);
    assert.equal(r.code, code, `${shown}: exit ${r.code}: ${r.stderr}`);
    const errors = r.stderr.split("\n").filter((l) => l.includes("error"));
    assert.equal(errors.length, 1, `${shown}: ${r.stderr}`);
    assert.match(errors[0], /^flashlm: error: /, shown);
    assert.match(errors[0], pattern, shown);
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  assert.ok(!exists(`${dir}/x.flm`), "a refused conversion writes nothing");
  console.log(`bad command lines: ${[...codes].map(([c, n]) => `${n} with exit ${c}`).join(", ")}`);
  await Deno.remove(dir, { recursive: true });
});

// ---------------------------------------------------------------------------
// NaN and Inf in weights

Deno.test("NaN or Inf in a weight is refused by the converter, naming the tensor, the element and the file", async () => {
  const cases: [string, "F32" | "F16", string, number, number][] = [
    ["F32 NaN in an FFN weight", "F32", "layers.1.fc2.weight", 37, NaN],
    ["F16 +Inf in an attention weight", "F16", "layers.0.self_attn.q_proj.weight", 5, Infinity],
    ["F32 -Inf in the embedding", "F32", "embed_tokens.weight", 0, -Infinity],
  ];
  for (const [what, dtype, name, index, value] of cases) {
    const dir = await tinyHfModel({ dtype });
    const st = `${dir}/model.safetensors`;
    await pokeTensor(st, `model.decoder.${name}`, index, value);
    const out = `${dir}/out.flm`;
    await assert.rejects(convertHfToFlash(dir, out), (e: unknown) => {
      assert.ok(e instanceof FlashlmError, `${what}: ${e}`);
      assert.ok(e.message.startsWith(`${st}: `), e.message);
      assert.ok(e.message.includes(`model.decoder.${name}`), e.message);
      assert.match(e.message, Number.isNaN(value) ? /NaN/ : /Infinity/);
      assert.ok(e.message.includes(`element ${index}`), e.message);
      assert.ok(!e.message.includes("\n"));
      return true;
    }, what);
    assert.ok(!exists(out), `${what}: nothing written`);
    await assert.rejects(
      loadModel(dir, { mode: "dense" }),
      /NaN|Infinity/,
      `${what}: dense load refuses it too`,
    );
    await Deno.remove(dir, { recursive: true });
  }
});
