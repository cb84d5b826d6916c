/** `bench io`, the page-cache control it relies on, and the SVG charts it draws. */

import { strict as assert } from "node:assert";
import { FlashlmError } from "../io/errors.ts";
import { benchIo, ensureBenchFile } from "../tools/bench_io.ts";
import { FIO_SOURCES } from "../tools/bench_io_fio.ts";
import { type BenchIoReport, formatBenchIoTable } from "../tools/bench_io_report.ts";
import { parseByteSize } from "../tools/byte_size.ts";
import { evictFromPageCache, residentFraction } from "../io/page_cache.ts";
import { availableBackends } from "../io/read_backends.ts";
import { barChart, lineChart } from "../tools/svg_chart.ts";
import { runCli } from "./helpers.ts";

// ---------------------------------------------------------------------------
// Sizes and the test file

Deno.test("byte sizes parse with binary and decimal units and reject nonsense", () => {
  assert.equal(parseByteSize("4KiB"), 4 * 1024);
  assert.equal(parseByteSize("4k"), 4 * 1024);
  assert.equal(parseByteSize("1MiB"), 1024 * 1024);
  assert.equal(parseByteSize("2GiB"), 2 * 1024 ** 3);
  assert.equal(parseByteSize("2GB"), 2e9);
  assert.equal(parseByteSize("1.5M"), 1.5 * 1024 * 1024);
  assert.equal(parseByteSize("12345"), 12345);
  for (const bad of ["", "0", "-4K", "4 parsecs", "K", "1e3"]) {
    assert.throws(
      () => parseByteSize(bad),
      (e: unknown) => e instanceof FlashlmError && e.kind === "usage",
    );
  }
});

Deno.test("the bench file is written once with random bytes and a smaller one is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bench-test-" });
  try {
    const path = `${dir}/data.bin`;
    assert.deepEqual(await ensureBenchFile(path, 3 << 20), { size: 3 << 20, created: true });
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, 3 << 20);
    const seen = new Set(bytes.subarray(0, 4096));
    assert(seen.size > 200, `only ${seen.size} distinct byte values: not random`);
    const mtime = (await Deno.stat(path)).mtime;
    assert.deepEqual(await ensureBenchFile(path, 1 << 20), { size: 3 << 20, created: false });
    assert.deepEqual((await Deno.stat(path)).mtime, mtime); // not rewritten
    await assert.rejects(
      () => ensureBenchFile(path, 4 << 20),
      (e: unknown) =>
        e instanceof FlashlmError && e.kind === "usage" && /fewer than --size/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Page cache

/** Whether `path` is on a tmpfs (whose pages cannot be evicted: they are the file). */
function onTmpfs(path: string): boolean {
  const mounts = Deno.readTextFileSync("/proc/mounts").split("\n").map((l) => l.split(" "));
  let best = "", type = "";
  for (const [, mountPoint, fsType] of mounts) {
    if (mountPoint && path.startsWith(mountPoint) && mountPoint.length > best.length) {
      best = mountPoint;
      type = fsType;
    }
  }
  return type === "tmpfs";
}

Deno.test("a file read in full is resident, and fadvise eviction empties it from the page cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-cache-test-" });
  try {
    const path = `${dir}/data.bin`;
    await ensureBenchFile(path, 4 << 20);
    await Deno.readFile(path);
    const before = await residentFraction(path);
    if (before === null) {
      console.warn("skipping residency checks: mincore through FFI is unavailable here");
      return;
    }
    assert.equal(before, 1);
    const method = await evictFromPageCache(path);
    assert.notEqual(method, "none");
    const after = await residentFraction(path);
    if (Deno.build.os === "linux" && !onTmpfs(path)) {
      assert(after !== null && after < 0.5, `still ${after} resident after ${method}`);
    }
    assert.equal(await evictFromPageCache(path, "none"), "none");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// The sweep

Deno.test("a small sweep measures every backend at every point and writes JSON, a table and SVG charts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bench-test-" });
  try {
    const lines: string[] = [];
    const backends = availableBackends();
    const report = await benchIo({
      file: `${dir}/data.bin`,
      size: 2 << 20,
      chunkSizes: [4096, 65536],
      depths: [1, 4],
      backends,
      fio: false,
      seconds: 0.02,
      outDir: `${dir}/out`,
      onLine: (line) => lines.push(line),
    });
    assert.deepEqual(report.sources, backends);
    assert.equal(report.points.length, 2 * 2 * backends.length);
    for (const p of report.points) {
      assert(p.mbps > 0 && p.bytes > 0 && p.bytes % p.chunkBytes === 0, JSON.stringify(p));
      assert.equal(p.error, undefined);
    }
    assert(lines.some((l) => l.includes("ffi") || l.includes("fs-pool")));
    const json = JSON.parse(await Deno.readTextFile(`${dir}/out/bench-io.json`)) as BenchIoReport;
    assert.equal(json.points.length, report.points.length);
    assert.equal(json.fileSize, 2 << 20);
    const table = await Deno.readTextFile(`${dir}/out/bench-io.txt`);
    assert.equal(table, formatBenchIoTable(report) + "\n");
    assert.equal(table.trim().split("\n").length, 1 + 2 * 2); // header + one row per point
    for (const backend of backends) {
      const svg = await Deno.readTextFile(`${dir}/out/bench-io-${backend}.svg`);
      assert(svg.startsWith("<svg") && svg.includes("1 in flight") && svg.includes("4 in flight"));
      assert.equal(svg.match(/<polyline/g)?.length, 2); // one line per depth
    }
    const perSource = await Deno.readTextFile(`${dir}/out/bench-io-depth4.svg`);
    assert.equal(perSource.match(/<polyline/g)?.length, backends.length); // one line per source
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Whether fio is on this machine (`apt-get install fio`); without it its test is ignored. */
function haveFio(): boolean {
  try {
    return new Deno.Command("fio", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    console.warn("ignoring the fio comparison test: fio is not installed");
    return false;
  }
}

Deno.test({
  name: "fio runs at the same point, buffered psync and O_DIRECT io_uring",
  ignore: !haveFio(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "flashlm-bench-test-" });
    try {
      const report = await benchIo({
        file: `${dir}/data.bin`,
        size: 4 << 20,
        chunkSizes: [16384],
        depths: [2],
        backends: ["fs-pool"],
        seconds: 0.1,
      });
      assert.notEqual(report.fio, null, "fio ran");
      assert.deepEqual(report.sources, ["fs-pool", ...FIO_SOURCES]);
      for (const source of FIO_SOURCES) {
        const p = report.points.find((q) => q.source === source)!;
        // O_DIRECT may be refused by the filesystem (tmpfs): then the point says why.
        assert(p.mbps > 0 || (p.error ?? "").startsWith("fio failed"), JSON.stringify(p));
      }
      assert(formatBenchIoTable(report).includes("best/psync"));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("cli bench io runs a tiny sweep and refuses an unknown backend", async () => {
  const dir = await Deno.makeTempDir({ prefix: "flashlm-bench-test-" });
  try {
    const ok = await runCli([
      "bench",
      "io",
      `${dir}/data.bin`,
      "--size",
      "1MiB",
      "--chunks",
      "4KiB",
      "--depths",
      "2",
      "--seconds",
      "0.02",
      "--fio=false",
      "--bun",
      "none",
      "--backend",
      "fs-pool",
      "--out",
      `${dir}/out`,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /fs-pool MB\/s/);
    assert((await Deno.stat(`${dir}/out/bench-io-fs-pool.svg`)).isFile);

    const backend = await runCli(["bench", "io", `${dir}/data.bin`, "--backend", "mmap"]);
    assert.equal(backend.code, 2);
    assert.match(backend.stderr, /unknown backend "mmap"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------
// Charts

Deno.test("the line chart draws one polyline per series, breaks lines at missing points, and escapes text", () => {
  const svg = lineChart({
    title: "a <b> & c",
    xLabel: "x",
    yLabel: "y",
    xLog: true,
    series: [
      { name: "one", points: [[1, 1], [2, 4], [4, 9]] },
      { name: "gap", points: [[1, 2], [2, NaN], [4, 3]] }, // two single points: no polyline
    ],
  });
  assert.equal(svg.match(/<polyline/g)?.length, 1);
  assert.equal(svg.match(/<circle/g)?.length, 5);
  assert(svg.includes("a &lt;b&gt; &amp; c") && !svg.includes("<b>"));
});

Deno.test("the bar chart draws one bar per finite value with its label", () => {
  const svg = barChart({
    title: "t",
    yLabel: "tokens/s",
    groups: ["m1", "m2"],
    series: [{ name: "naive", values: [1.5, NaN] }, { name: "flash", values: [12, 30] }],
  });
  assert.equal(svg.match(/<rect x=/g)?.length, 3 + 2); // 3 bars, 2 legend keys
  for (const label of ["m1", "m2", "naive", "flash", "1.5", "12.0", "30.0"]) {
    assert(svg.includes(`>${label}<`), label);
  }
});
